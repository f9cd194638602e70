"""The store's lock held by another thread, as by a long eviction, install or index commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from oca.storage import Store


@contextmanager
def store_lock_held(store: Store) -> Iterator[None]:
    """Another thread holds `store`'s lock for the span of the `with` block."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(5)
        yield
    finally:
        release.set()
        holder.join()

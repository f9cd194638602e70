"""A worker keeps the garbage collector off its hit path (oca.serve.worker, oca.serve.server): once it serves,
what it built at start is frozen out of every collection and automatic collection is off (its passes are
triggered by allocation counts, i.e. by traffic); the one-second sweep collects instead."""

from __future__ import annotations

import gc
import socket
from typing import Any

from oca.config import load_box_config
from oca.serve.loops import new_event_loop
from oca.serve.worker import Worker
from oca.storage import Store
from tests.conftest import write_box_config


def test_a_serving_worker_has_frozen_its_start_and_collects_only_in_its_sweep(tmp_path: Any) -> None:
    config = load_box_config(write_box_config(str(tmp_path)))
    Store.open(config.storage).close()  # the master opens the store before any worker starts
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    loop = new_event_loop("uvloop")
    seen: dict[str, Any] = {}
    assert gc.isenabled()
    try:
        worker = Worker(config, listener, None, loop)

        def serving() -> None:
            seen["enabled"], seen["frozen"] = gc.isenabled(), gc.get_freeze_count()
            seen["young_collections"] = gc.get_stats()[1]["collections"]
            loop.call_later(1.5, after_a_sweep)

        def after_a_sweep() -> None:
            seen["young_collections_later"] = gc.get_stats()[1]["collections"]
            worker.stop()

        loop.call_later(0.2, serving)
        loop.run_until_complete(worker.run())
    finally:
        loop.close()
        listener.close()
        gc.enable()  # the test process's collector as it was
        gc.unfreeze()
    assert seen["enabled"] is False
    assert seen["frozen"] > 1000  # the config, the store view, the handler, the modules' objects
    assert seen["young_collections_later"] > seen["young_collections"]  # the sweep's gc.collect(1)

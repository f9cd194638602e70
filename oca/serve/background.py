"""Coroutines the master starts without waiting for them (a fill link to attach, an I/O error to report).

Rules kept here:
- A reference to each task is kept until it ends: the event loop keeps only weak ones, and a task no one
  holds can be collected half way.
- One set for the whole master: its parts (supervisor, reports, reload) share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run coro without waiting for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

"""control.service: the start of `oca control serve`, in process: the first poll is bounded and never fatal,
and what the start built is frozen out of the garbage collector's sight."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from control.config import load_control_config
from control.service import YOUNG_COLLECTION_AFTER, first_poll, serve
from tests.conftest import free_port
from tests.control.fixtures import box_entry, write_control_config


async def test_a_first_poll_that_does_not_finish_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    polled: set[str] = {"b1"}

    async def poll_once() -> None:
        await asyncio.Event().wait()  # a fleet too large to poll within the bound

    plane: Any = SimpleNamespace(
        poller=SimpleNamespace(poll_once=poll_once, last_poll=lambda box: 1.0 if box in polled else None),
        config=SimpleNamespace(fleet=SimpleNamespace(boxes={"b1": None, "b2": None, "b3": None})))
    with caplog.at_level(logging.WARNING, logger="oca.control"):
        await first_poll(plane, 0.05)
    assert "first poll of 3 boxes not done within 0.05s: 2 not polled yet" in caplog.text


async def test_a_first_poll_still_fetching_inventories_is_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def poll_once() -> None:
        await asyncio.Event().wait()  # every box polled; waiting for the inventories the polls queued

    plane: Any = SimpleNamespace(
        poller=SimpleNamespace(poll_once=poll_once, last_poll=lambda box: 1.0),
        inventory=SimpleNamespace(pending=2),
        config=SimpleNamespace(fleet=SimpleNamespace(boxes={"b1": None, "b2": None, "b3": None})))
    with caplog.at_level(logging.INFO, logger="oca.control"):
        await first_poll(plane, 0.05)
    assert "every box polled once within 0.05s; 2 inventories still being fetched" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_first_poll_that_fails_still_raises() -> None:
    async def poll_once() -> None:
        raise RuntimeError("a bug")

    plane: Any = SimpleNamespace(poller=SimpleNamespace(poll_once=poll_once))
    with pytest.raises(RuntimeError, match="a bug"):
        await first_poll(plane, 5.0)


async def test_serve_answers_freezes_what_it_built_and_collects_young_objects_less_often(tmp_path: Any) -> None:
    port = free_port()
    path = write_control_config(str(tmp_path), [box_entry("b1", 1, 1)], listen=f"127.0.0.1:{port}")
    config = load_control_config(path)
    stop = asyncio.Event()
    gc.unfreeze()
    before = gc.get_threshold()
    task = asyncio.create_task(serve(config, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("serve() never answered /healthz")
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, *before[1:])
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        gc.unfreeze()
    assert gc.get_threshold() == before

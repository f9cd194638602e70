"""`oca control serve`: run the control plane in the foreground until SIGTERM or SIGINT.

Rules kept here:
- Start order: open the plane (store, state, HTTP client), poll every box once so the first manifests
  already see the fleet, start the background work, then listen; READY=1 to systemd once listening, and
  WATCHDOG=1 while the loop runs when a watchdog is asked for.
- The first poll gets twice `health.timeout`: boxes not heard from by then (a large fleet) stay "not
  polled yet", out of steering until their scheduled poll, and the start goes on: it never fails
  because the fleet is slow or large.
- Once the plane is built, everything made so far (the fleet, the prefix tables: millions of objects at
  10,000 boxes) is moved out of the garbage collector's sight with `gc.freeze()`: a full collection over
  them took about 350 ms there, a stall of every request, and they live as long as the process. The
  collector is off while they are made (`oca control serve` turns it off before loading; on here): the
  collections it ran over them, none of which could free anything, were a third of the load's CPU.
- While it serves, a young-generation collection runs after `YOUNG_COLLECTION_AFTER` new objects, not
  CPython's 700: what is made after the freeze is mostly each health poll's objects (the poll in flight;
  its BoxStatus and BoxHealth are Structs the collector does not track), which make no cycles, and at
  20,000 boxes the default threshold ran a collection every few hundred polls: 6-17 µs of CPU a poll,
  0.6 µs with this threshold (measured over 15,000 fake boxes). The previous thresholds are put back when
  serve() returns.
- Stop order: stop listening (in-flight requests get `shutdown_timeout`), then the plane (which saves the
  popularity snapshot and closes the store).
- SIGHUP re-reads the prefix files (fleet.prefixes_file, coverage_file) now, changed or not; they are also
  re-read within `prefixes_check_interval` of a change. A bad file is logged and changes nothing. Every
  other setting, boxes and sites included, is read at start only: restart to change them.
- An open API (no operator token configured) is logged as a warning at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from aiohttp import web

from control.api import build_app
from control.config import ControlConfig
from control.plane import ControlPlane
from control.preflight import Startup
from oca.systemd import notify, watchdog_interval

log = logging.getLogger("oca.control")
SHUTDOWN_TIMEOUT = 10.0
YOUNG_COLLECTION_AFTER = 10_000  # objects made (less those freed) between two young collections (CPython: 700)


async def serve(config: ControlConfig, stop: asyncio.Event | None = None, *, loaded: Startup | None = None) -> None:
    plane = await ControlPlane.open(config, loaded=loaded)
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, *thresholds[1:])
    gc.enable()  # the CLI turns it off while the fleet loads
    runner: web.AppRunner | None = None
    watchdog: asyncio.Task[None] | None = None
    try:
        if plane.operator_token is None:
            log.warning("auth.operator_token_file is not set: the operator API is open to anyone who can reach it")
        await first_poll(plane, config.health.timeout * 2)
        plane.start()
        runner = web.AppRunner(build_app(plane), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        host, port = config.listen
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        log.info("control plane on %s:%d with %d boxes in %d sites", host, port, len(config.fleet.boxes),
                 len(config.fleet.sites))
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[bool]] = set()

        def reload() -> None:
            log.info("SIGHUP: re-reading the prefix files (other settings need a restart)")
            task = asyncio.create_task(plane.reload_prefixes(force=True), name="prefix reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        notify("READY=1")
        interval = watchdog_interval()
        if interval is not None:
            watchdog = asyncio.create_task(_watchdog(interval))
        await stop.wait()
        notify("STOPPING=1")
        log.info("stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if runner is not None:
            await runner.cleanup()
        await plane.close()
        gc.set_threshold(*thresholds)


async def first_poll(plane: ControlPlane, within: float) -> None:
    """Poll every box once, for at most `within` seconds; the boxes not heard from by then wait for their
    scheduled poll (logged, never raised)."""
    poll = asyncio.ensure_future(plane.poller.poll_once())
    done, _ = await asyncio.wait({poll}, timeout=within)
    if poll in done:
        poll.result()
        return
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poll
    waiting = sum(1 for box_id in plane.config.fleet.boxes if plane.poller.last_poll(box_id) is None)
    if waiting == 0:  # the polls are done; what is left is fetching inventories, which goes on meanwhile
        log.info("every box polled once within %gs; %d inventories still being fetched", within,
                 plane.inventory.pending)
        return
    log.warning("first poll of %d boxes not done within %gs: %d not polled yet, out of steering until their "
                "scheduled poll", len(plane.config.fleet.boxes), within, waiting)


async def _watchdog(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)

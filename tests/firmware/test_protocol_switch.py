"""Releases whose master-worker protocol differs from the running master's, on a live box under load.

Each release is this checkout's wheel with oca/protocol/version.py bumped: one version ahead it speaks the
master's version too and switches with zero failed requests; two ahead it is refused before any of its
workers starts, and the old release keeps serving. A release whose version file says one thing while its
worker speaks another is refused by the master's handshake instead: its workers exit, it fails its gate."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from oca import __version__
from oca.protocol.codec import SPEAKS
from oca.protocol.version import VERSION
from tests.conftest import OCA, Box
from tests.firmware.conftest import SEGMENT, firmware_box
from tests.firmware.test_box import Players


def _bump(by: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text, count = re.subn(r"^VERSION = (\d+)$", lambda m: f"VERSION = {int(m[1]) + by}", text, flags=re.M)
        assert count == 1
        return text
    return edit


def _speak(versions: tuple[int, ...]) -> Callable[[str], str]:
    """codec.py rewritten so the worker says it speaks `versions` whatever its version file says."""
    def edit(text: str) -> str:
        hook = "SPEAKS = speaks(VERSION)"
        assert text.count(hook) == 1
        return text.replace(hook, f"SPEAKS = {versions!r}")
    return edit


def _install(box: Box, bundle: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, "firmware", "install", bundle, "--config", box.config_path, "--json"],
                          capture_output=True, text=True, timeout=120)


def test_one_protocol_version_ahead_switches_with_zero_failures_and_two_ahead_is_refused(
        box_factory: Callable[..., Box], keys: dict[str, Any], bundle_of: Callable[..., str]) -> None:
    ahead_two = bundle_of("97.0", tag="-protocol+2", replace={"oca/protocol/version.py": _bump(2)})
    ahead_one = bundle_of("96.0", tag="-protocol+1", replace={"oca/protocol/version.py": _bump(1)})
    box = firmware_box(box_factory, keys)
    workers = set(box.worker_pids())
    players = Players(box.port)
    players.start()
    time.sleep(0.3)
    refused = _install(box, ahead_two)
    time.sleep(0.3)
    assert set(box.worker_pids()) == workers  # nothing was started, nothing stopped
    switched = _install(box, ahead_one)
    time.sleep(0.5)
    players.stop()
    print(f"protocol switch: {players.requests} requests, {len(players.failures)} failed, {players.retried} "
          f"retried, servers {dict(players.servers)}")
    assert refused.returncode == 1
    assert (f"409: release 97.0 speaks master-worker protocol versions [{VERSION + 2}, {VERSION + 1}]; this master "
            f"speaks {list(SPEAKS)}: switch through a release in between, or upgrade the installed oca first; "
            f"release {__version__} keeps serving") in refused.stderr, refused.stderr
    assert switched.returncode == 0, switched.stderr + box.log()
    assert players.failures == [], f"{players.failures[:5]}\n{box.log()[-6000:]}"  # the worker's traceback
    assert players.servers[f"oca/{__version__}"] > 0 and players.servers["oca/96.0"] > 0
    status = box.admin("/status")
    assert (status["version"], status["previous_version"], status["firmware"]["state"]) == ("96.0", __version__,
                                                                                           "idle")
    assert box.get(SEGMENT)[1]["server"] == "oca/96.0"
    assert "refused: the worker speaks" not in box.log()  # the +1 workers' handshake chose the master's version


def test_a_worker_the_master_cannot_talk_to_is_refused_at_its_handshake_and_the_old_release_serves(
        box_factory: Callable[..., Box], keys: dict[str, Any], bundle_of: Callable[..., str]) -> None:
    liar = bundle_of("98.0", tag="-speaks-ahead",
                     replace={"oca/protocol/codec.py": _speak((VERSION + 3, VERSION + 2))})
    box = firmware_box(box_factory, keys, health_timeout="5s")
    workers = set(box.worker_pids())
    players = Players(box.port)
    players.start()
    time.sleep(0.3)
    failed = _install(box, liar)
    time.sleep(0.3)
    players.stop()
    assert failed.returncode == 1 and "422: a worker of release 98.0 exited with code 2" in failed.stderr, \
        failed.stderr
    assert players.failures == [], f"{players.failures[:5]}\n{box.log()[-6000:]}"  # the worker's traceback
    log = box.log()
    assert (f"refused: the worker speaks protocol versions [{VERSION + 3}, {VERSION + 2}], this master speaks "
            f"{list(SPEAKS)}: no version in common") in log, log
    assert "not serving: the master refused this worker" in log
    assert set(box.worker_pids()) == workers
    assert box.admin("/status")["version"] == __version__
    assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"

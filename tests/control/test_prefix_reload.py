"""Prefix data reloaded without a restart (control.prefix_data, `oca control serve`): a changed file is read
again (on SIGHUP at once, else within prefixes_check_interval); a bad one is one logged line naming the file
and the line, and the index in use stays."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from control.config import load_control_config
from control.prefix_data import PrefixState, build_index, reload_index
from control.preflight import prefix_files
from tests.conftest import OCA, free_port

FLEET = ("fleet:\n  origin_url: http://o\n  prefixes_file: prefixes.csv\n"
         "  sites: [{id: s1, latitude: 52.4, longitude: 4.9, country: NL}, {id: s2, latitude: 48.9, longitude: 2.3,"
         " country: FR}]\n"
         "  boxes:\n"
         "    - {id: b1, site: s1, data_url: 'http://127.0.0.1:1', admin_url: 'http://127.0.0.1:1'}\n"
         "    - {id: b2, site: s2, data_url: 'http://127.0.0.1:1', admin_url: 'http://127.0.0.1:1'}\n")


def _config(tmp_path: Path, extra: str = "") -> str:
    listen = f"127.0.0.1:{free_port()}"
    (tmp_path / "control.yaml").write_text(f"listen: {listen}\nstate: {{path: state.db}}\n{extra}{FLEET}")
    (tmp_path / "prefixes.csv").write_text("prefix,box\n192.0.2.0/24,b1\n")
    return str(tmp_path / "control.yaml")


def _replace(path: Path, text: str) -> None:
    """As an operator should: write beside, rename over (the reader never sees half a file)."""
    (path.parent / "prefixes.csv.new").write_text(text)
    os.replace(path.parent / "prefixes.csv.new", path)


def test_reload_reads_a_changed_file_and_keeps_the_index_when_the_file_is_bad(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_control_config(_config(tmp_path))
    files = prefix_files(config)
    state = PrefixState(files, files.signature(), 1.0, 1, 0)
    assert reload_index(config.fleet, state, None, lambda: 2.0) is None  # nothing changed
    _replace(tmp_path / "prefixes.csv", "prefix,site\n192.0.2.0/24,s2\n198.51.100.0/24,s1\n")
    index = reload_index(config.fleet, state, None, lambda: 3.0)
    assert index is not None and len(index.announced) == 2
    match = index.announced.lookup("192.0.2.9")
    assert match is not None and match.value == ("b2",)
    assert (state.loaded_at, state.announced, state.reloads, state.error) == (3.0, 2, 1, None)

    _replace(tmp_path / "prefixes.csv", "prefix,box\n192.0.2.0/24,b1\n203.0.113.0/24,b9\n")
    with caplog.at_level(logging.ERROR, logger="oca.control.prefixes"):
        assert reload_index(config.fleet, state, None, lambda: 4.0) is None
        assert reload_index(config.fleet, state, None, lambda: 5.0) is None  # unchanged since: not read again
        assert reload_index(config.fleet, state, None, lambda: 6.0, force=True) is None  # SIGHUP: read, same error
    assert state.error == f"{tmp_path}/prefixes.csv: line 3: unknown box 'b9'"
    assert [r.getMessage() for r in caplog.records] == [
        f"prefix data not reloaded, still serving the data loaded before: {state.error}"]
    assert (state.loaded_at, state.announced) == (3.0, 2)  # what is served did not change
    _replace(tmp_path / "prefixes.csv", "192.0.2.0/24,b1\n")
    index = reload_index(config.fleet, state, None, lambda: 7.0)
    assert index is not None and len(index.announced) == 1 and state.error is None


def test_build_index_puts_inline_and_file_prefixes_together(tmp_path: Path) -> None:
    config = load_control_config(_config(tmp_path))
    index = build_index(config.fleet, prefix_files(config), None)
    assert len(index.announced) == 1 and len(index.coverage) == 0


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _wait(port: int, ok: Any, what: str, process: subprocess.Popen[bytes], within: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"oca control serve exited with {process.returncode}"
        try:
            status = _status(port)
            if ok(status):
                return status
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


def test_a_running_control_plane_reloads_on_sighup_and_on_change(tmp_path: Path) -> None:
    path = _config(tmp_path, "prefixes_check_interval: 0.2s\nhealth: {interval: 1h}\n")
    port = int(Path(path).read_text().split("listen: 127.0.0.1:")[1].split("\n")[0])
    log = open(tmp_path / "control.log", "wb")  # noqa: SIM115  # closed in the finally
    process = subprocess.Popen([OCA, "control", "serve", "--config", path], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        status = _wait(port, lambda s: True, "an answer", process)
        assert status["prefixes"]["announced"] == 1 and status["prefixes"]["reloads"] == 0
        _replace(tmp_path / "prefixes.csv", "prefix,box\n192.0.2.0/24,b1\n198.51.100.0/24,b2\n")
        process.send_signal(signal.SIGHUP)
        _wait(port, lambda s: s["prefixes"]["announced"] == 2, "the SIGHUP reload", process)
        _replace(tmp_path / "prefixes.csv", "prefix,box\n192.0.2.0/24,b1\n198.51.100.0/24,b2\n2001:db8::/32,b1\n")
        _wait(port, lambda s: s["prefixes"]["announced"] == 3, "the reload on change (no signal)", process)
        _replace(tmp_path / "prefixes.csv", "prefix,box\n192.0.2.0/24,b1\n198.51.100.0/33,b2\n")
        status = _wait(port, lambda s: s["prefixes"]["error"] is not None, "the bad file's error", process)
        assert status["prefixes"]["error"].startswith(f"{tmp_path}/prefixes.csv: line 3: not a CIDR prefix")
        assert status["prefixes"]["announced"] == 3  # still the last good data
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    lines = (tmp_path / "control.log").read_text().splitlines()
    errors = [line for line in lines if "prefix data not reloaded" in line]
    assert len(errors) == 1 and f"{tmp_path}/prefixes.csv: line 3: not a CIDR prefix" in errors[0]

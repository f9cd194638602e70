"""`oca lab up` as a real process: the table and URLs, Ctrl-C leaves nothing behind, a second run reuses the
content, SIGKILL of the lab leaves no orphan either, and a child that fails is one line naming it and its log."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

import pytest

from oca.lab.postgres import server_bindir
from tests.conftest import OCA

pytestmark = pytest.mark.slow
END = "Ctrl-C stops everything."


def start(workdir: str) -> subprocess.Popen[str]:
    return subprocess.Popen([OCA, "lab", "up", "--dir", workdir, "--titles", "1", "--duration", "6", "--synthetic",
                             "--port", "0", "--box-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)


def read_until_up(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """stdout up to the last line of the report (read on a thread: a select on a buffered pipe misses lines)."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if line.strip() == END:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"oca lab up did not come up:\n{''.join(seen)}\n{process.communicate()[1]}")


def left_behind(workdir: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", workdir], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def interrupt(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def test_lab_up_prints_what_is_where_and_stops_cleanly_then_reuses_the_content(tmp_path: Any) -> None:
    workdir = str(tmp_path / "lab")
    first = start(workdir)
    try:
        out = read_until_up(first)
        header = next(line for line in out.splitlines() if line.startswith("title "))
        assert header.split() == ["title", "a1", "(A)", "a2", "(A)", "b1", "(B)"], out
        row = next(line for line in out.splitlines() if line.startswith("1001 "))
        assert row.count("live") == 2, out
        for what in ("lab page       http://127.0.0.1:", "/lab\n", "/v1/play/1001/master.m3u8",
                     "/v1/play/1001/manifest.mpd", "X-OCA-Lab-Client: 127.0.2.10", "ffmpeg -v error -headers",
                     "/api/lab", f"Files (everything under {workdir}/)", f"origin log     {workdir}/origin.log"):
            assert what in out, what
        assert len(left_behind(workdir)) >= 5  # origin, control plane, three box masters (and their workers)
        err = interrupt(first)
    finally:
        first.kill()
    assert "lab: stopped" in err
    assert left_behind(workdir) == []
    assert "content: 1 synthetic title(s), 0 reused" in err
    assert "lab: content: title 1/1 (1001): made, " in err
    second = start(workdir)
    try:
        read_until_up(second)
    finally:
        second.kill()  # SIGKILL: the lab cannot stop anything itself; PR_SET_PDEATHSIG does
    _, err = second.communicate(timeout=10)
    assert "content: 1 synthetic title(s), 1 reused" in err
    deadline = time.monotonic() + 15
    while left_behind(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left_behind(workdir) == []


def test_a_box_that_cannot_start_is_one_line_naming_its_log(tmp_path: Any) -> None:
    workdir = str(tmp_path / "lab")
    os.makedirs(os.path.join(workdir, "boxes", "a2"))
    with open(os.path.join(workdir, "boxes", "a2", "state"), "w") as fh:
        fh.write("a file where the box's state directory goes\n")
    process = start(workdir)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("oca: box a2 exited during start (exit code"), err
    assert last.endswith(os.path.join(workdir, "boxes", "a2", "box.log")), last
    assert left_behind(workdir) == []


@pytest.mark.skipif(server_bindir() is None or shutil.which("haproxy") is None,
                    reason="postgresql or haproxy missing: make system-deps")
def test_lab_up_with_two_control_replicas_and_ctrl_c_stops_postgresql_and_haproxy_too() -> None:
    # PostgreSQL runs as `postgres` when we are root: the lab goes where it can enter (not pytest's 0700 tmp)
    workdir = tempfile.mkdtemp(prefix="oca-lab-cli-", dir="/tmp" if os.geteuid() == 0 else None)
    os.chmod(workdir, 0o755)
    try:
        process = subprocess.Popen([OCA, "lab", "up", "--dir", workdir, "--titles", "1", "--duration", "6",
                                    "--synthetic", "--port", "0", "--box-port", "0", "--boxes", "2",
                                    "--control-replicas", "2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        report = read_until_up(process)
        assert "HAProxy (checks GET /healthz every 500 ms, fall 2 rise 2" in report, report
        assert "replica r1" in report and "replica r2" in report, report
        running = left_behind(workdir)
        assert any("postgres" in line for line in running) and any("haproxy" in line for line in running), running
        err = interrupt(process)
        assert "lab: stopped (SIGINT)" in err
        assert left_behind(workdir) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_control_replicas_out_of_range_is_one_line(tmp_path: Any) -> None:
    done = subprocess.run([OCA, "lab", "up", "--dir", str(tmp_path), "--control-replicas", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--control-replicas" in done.stderr and "must be 1-9, got 0" in done.stderr

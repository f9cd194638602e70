"""Stopping a server a benchmark started: SIGTERM, a bounded wait, then SIGKILL, always reaped."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM `process` if it still runs and wait up to `timeout` seconds for it; SIGKILL it if it has not
    gone by then. It is reaped either way (no zombie left behind a benchmark)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()

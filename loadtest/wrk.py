"""Drive wrk and read its report: one bounded run in, one WrkResult out.

Rules it keeps:
- Every run is bounded by wrk's own `-d` and, as a backstop, by a subprocess timeout; nothing here
  loops or retries.
- Parsing is a pure function over wrk's text output (wrk 4.x with `--latency`), so it is tested
  without running wrk. Units are wrk's: latency in us/ms/s/m/h, sizes in 1024-based B/KB/MB/GB/TB.
- A report that lacks Requests/sec or Transfer/sec raises WrkError quoting the output; missing
  error lines simply mean zero errors (wrk prints them only when non-zero).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

LUA_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_object.lua")

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # -> milliseconds
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}

_REQUESTS_PER_SEC = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.M)
_TRANSFER_PER_SEC = re.compile(r"^Transfer/sec:\s+([\d.]+)([KMGTP]?B)\s*$", re.M)
_LATENCY_P50 = re.compile(r"^\s+50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_LATENCY_P99 = re.compile(r"^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_TOTALS = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGTP]?B) read\s*$", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkError(Exception):
    """wrk failed to run or printed a report we cannot read."""


@dataclass(frozen=True)
class WrkErrors:
    """wrk's error counters for one run."""

    non_2xx: int = 0
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.non_2xx + self.connect + self.read + self.write + self.timeout

    def __add__(self, other: WrkErrors) -> WrkErrors:
        return WrkErrors(self.non_2xx + other.non_2xx, self.connect + other.connect, self.read + other.read,
                         self.write + other.write, self.timeout + other.timeout)

    def describe(self) -> str:
        """`0`, or the non-zero counters: `3 non-2xx, 1 timeout`."""
        parts = [f"{count} {name.replace('_', '-')}" for name, count in (
            ("non_2xx", self.non_2xx), ("connect", self.connect), ("read", self.read),
            ("write", self.write), ("timeout", self.timeout)) if count]
        return ", ".join(parts) or "0"


@dataclass(frozen=True)
class WrkResult:
    """The numbers of one wrk run."""

    requests: int
    seconds: float
    requests_per_sec: float
    transfer_bytes_per_sec: float
    p50_ms: float | None
    p99_ms: float | None
    errors: WrkErrors

    @property
    def mib_per_sec(self) -> float:
        return self.transfer_bytes_per_sec / (1 << 20)


def parse_output(text: str) -> WrkResult:
    """Read wrk's report (stdout of `wrk --latency`)."""
    rps = _REQUESTS_PER_SEC.search(text)
    transfer = _TRANSFER_PER_SEC.search(text)
    if rps is None or transfer is None:
        raise WrkError(f"no Requests/sec or Transfer/sec in wrk's output:\n{text.strip()}")
    totals = _TOTALS.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    connect, read, write, timeout = (int(g) for g in sockets.groups()) if sockets else (0, 0, 0, 0)
    return WrkResult(
        requests=int(totals.group(1)) if totals else 0,
        seconds=float(totals.group(2)) * _TIME_UNITS[totals.group(3)] / 1e3 if totals else 0.0,
        requests_per_sec=float(rps.group(1)),
        transfer_bytes_per_sec=float(transfer.group(1)) * _SIZE_UNITS[transfer.group(2)],
        p50_ms=_latency_ms(_LATENCY_P50, text),
        p99_ms=_latency_ms(_LATENCY_P99, text),
        errors=WrkErrors(int(non_2xx.group(1)) if non_2xx else 0, connect, read, write, timeout),
    )


def _latency_ms(line: re.Pattern[str], text: str) -> float | None:
    """One line of the --latency distribution, in ms; None if wrk did not print it."""
    match = line.search(text)
    return float(match.group(1)) * _TIME_UNITS[match.group(2)] if match else None


def run_wrk(wrk: str, url: str, paths_file: str, *, connections: int, seconds: float, threads: int = 2,
            timeout_s: float = 5.0, startup_s: float = 30.0) -> WrkResult:
    """One wrk run of `seconds` against `url`, each request a random path from `paths_file`. `startup_s`: the
    time wrk may take before its run starts, each thread formatting every path of the file once (random_object.lua's
    init: minutes for 10^6 paths on a busy machine)."""
    threads = max(1, min(threads, connections))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{_seconds_arg(seconds)}",
            f"--timeout={_seconds_arg(timeout_s)}", "--latency", "-s", LUA_SCRIPT, url, "--", paths_file]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + startup_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not stop within {seconds + timeout_s + startup_s:.0f}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise WrkError(f"cannot run {wrk}: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {' '.join(argv)}\n{done.stderr.strip()}")
    return parse_output(done.stdout)


def _seconds_arg(seconds: float) -> str:
    """wrk's -d and --timeout take whole seconds (its time parser knows only s, m and h)."""
    return f"{max(1, round(seconds))}s"

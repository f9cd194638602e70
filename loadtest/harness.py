"""What the load harnesses that start servers (`loadtest.bench`, `loadtest.slowloris`) share around a run:
finding their tools, a work dir, progress lines, SIGTERM, and the JSON report.

Rules kept here:
- SIGTERM raises SystemExit, which unwinds through every `finally`, so the servers a run started are
  stopped on SIGTERM as on Ctrl-C and on errors.
- The work dir is removed at the end unless kept, and then its path is said on stderr.
- Progress goes to stderr, stamped with the seconds since the run started; stdout is for the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

INSTALL_HINT = "install it with `make system-deps`"


def find_tools(prog: str, oca: str, fallbacks: dict[str, str]) -> dict[str, str] | str:
    """Paths of the tools named in `fallbacks` (PATH first, then the fallback path) and of oca, or the one
    line saying which is missing."""
    tools = {}
    for name, fallback in fallbacks.items():
        found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
        if found is None:
            return f"{prog}: {name} not found (looked in PATH and {fallback}); {INSTALL_HINT}"
        tools[name] = found
    if not os.access(oca, os.X_OK):
        return f"{prog}: {oca} not found; install oca with `make` (pip install -e .) in this venv"
    tools["oca"] = oca
    return tools


@dataclass(frozen=True)
class Run:
    """One run of a harness: its work dir and its clock."""

    workdir: str
    started: float

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f}s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def harness_run(prog: str, keep: bool) -> Iterator[Run]:
    """A run with SIGTERM turned into SystemExit and a fresh work dir, removed at the end unless `keep`."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    run = Run(tempfile.mkdtemp(prefix=f"oca-{prog}-"), time.monotonic())
    try:
        yield run
    finally:
        if keep:
            print(f"{prog}: work dir kept: {run.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(run.workdir, ignore_errors=True)


def write_json(path: str, report: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, so the servers get stopped


@dataclass(frozen=True)
class Figure:
    """A figures-table row; `value` (and its `unit`) is the number behind `figure`, for the JSON report."""

    case: str
    figure: str
    goal: str
    verdict: str
    value: float | None = None
    unit: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case, "figure": self.figure, "goal": self.goal, "verdict": self.verdict}
        if self.value is not None or self.unit is not None:
            out["value"] = self.value
        if self.unit is not None:
            out["unit"] = self.unit
        return out


def render_figures(rows: Sequence[Figure]) -> str:
    lines = ["| case | figure | goal | verdict |", "|---|---|---|---|"]
    lines += [f"| {r.case} | {r.figure} | {r.goal} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model for a report's machine line (/proc/cpuinfo; the platform's guess elsewhere)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu

"""Running Debian's promtool (package `prometheus`, in the Makefile's SYSTEM_TOOLS) from the tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES_DIR = os.path.join(ROOT, "configs", "prometheus")


def promtool() -> str:
    """The promtool binary; the test skips, saying how to get it, when it is not installed."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: `make system-deps` (Debian package prometheus) installs it")
    return found


def run(*args: str, cwd: str = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)

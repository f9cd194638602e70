"""`oca firmware keygen|build`: the files they write, read back by the box's verification; trusted keys
checked at start."""

from __future__ import annotations

import os
import stat
import subprocess
from typing import Any

import pytest

from oca.firmware.bundle import read_bundle
from oca.firmware.keys import load_trusted_keys
from oca.firmware.verify import verify
from tests.conftest import OCA
from tests.firmware.conftest import NEXT, RUNNING


def _oca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, "firmware", *args], capture_output=True, text=True, timeout=120)


def test_keygen_and_build_make_a_bundle_the_box_accepts(tmp_path: Any, next_wheel: str) -> None:
    key = str(tmp_path / "signer.pem")
    made = _oca("keygen", key)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert _oca("keygen", key).returncode == 2  # never overwrites a key
    out = str(tmp_path / "b.tar")
    built = _oca("build", "--version", NEXT, "--signing-key", key, "--out", out, "--wheel", next_wheel,
                 "--min-version", str(RUNNING))
    assert built.returncode == 0, built.stderr
    assert f"oca {NEXT}" in built.stdout
    with open(out, "rb") as fh:
        manifest = verify(read_bundle(fh, 1 << 30), load_trusted_keys(str(tmp_path / "signer.pub.pem")), str(RUNNING))
    assert (manifest.version, manifest.min_version, manifest.rollback) == (NEXT, str(RUNNING), False)
    public = _oca("build", "--version", NEXT, "--signing-key", str(tmp_path / "signer.pub.pem"), "--out", out)
    assert public.returncode == 2 and "this is a public key" in public.stderr
    bad = _oca("build", "--version", "next", "--signing-key", key, "--out", out, "--wheel", next_wheel)
    assert bad.returncode != 0 and "'next' is not a PEP 440 version" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("content, problem", [(None, "trusted keys file"), ("junk\n", "no PUBLIC KEY block")])
def test_an_unusable_trusted_keys_file_stops_the_box_at_start_with_one_line(tmp_path: Any, content: str | None,
                                                                           problem: str) -> None:
    from tests.conftest import write_box_config

    keys = tmp_path / "trusted.pem"
    if content is not None:
        keys.write_text(content)
    config = write_box_config(str(tmp_path), firmware={"trusted_keys_file": str(keys)})
    result = subprocess.run([OCA, "serve", "--config", config], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and str(keys) in lines[0] and problem in lines[0] and "Traceback" not in result.stderr


def test_an_unusable_trusted_keys_file_stops_the_control_plane_at_start(tmp_path: Any) -> None:
    from tests.control.fixtures import box_entry, write_control_config

    (tmp_path / "trusted.pem").write_text("junk\n")
    config = write_control_config(str(tmp_path), [box_entry("b1", 9, 9)], rollout={"trusted_keys_file": "trusted.pem"})
    result = subprocess.run([OCA, "control", "serve", "--config", config], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "trusted.pem" in lines[0] and "no PUBLIC KEY block" in lines[0]

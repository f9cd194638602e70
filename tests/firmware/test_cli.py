"""`oca firmware keygen|build`: the files they write, read back by the box's verification."""

from __future__ import annotations

import os
import stat
import subprocess
from typing import Any

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

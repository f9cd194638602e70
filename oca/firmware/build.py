"""Building a bundle: a wheel of this project that reports the bundle's version, a manifest, a signature.

Rules kept here:
- The wheel is built by pip (`pip wheel --no-deps`) from a copy of the source tree in a temporary
  directory, never in the checkout (pip builds in-tree and would leave build/ and *.egg-info behind).
- In that copy, and only there, two lines are rewritten to the bundle's version: `version = "..."` in
  pyproject.toml (the wheel's name and metadata) and `__version__ = "..."` in oca/__init__.py (what
  the release's workers report: `Server: oca/<version>`, /status). Each must match exactly once, or the
  build stops: the checkout itself, `make test` and editable installs never see the change.
- The manifest is signed as the bytes written to the bundle; nothing re-serialises it afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oca.errors import OcaError
from oca.firmware.bundle import write_bundle
from oca.firmware.keys import key_id
from oca.firmware.verify import Manifest, parse_version

# what a wheel of this project is built from (pyproject's packages.find, plus the readme its metadata names)
_SOURCES = ("pyproject.toml", "README.md", "oca", "control", "fill", "loadtest")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".pytest_cache")


def source_root() -> str:
    """The checkout this `oca` runs from (the directory holding pyproject.toml next to the oca package)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(here, "pyproject.toml")):
        raise OcaError(f"{here} holds no pyproject.toml: run from a checkout or give --source")
    return here


def _rewrite(path: str, pattern: str, replacement: str) -> None:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text, count = re.subn(pattern, replacement, text, flags=re.M)
    if count != 1:
        raise OcaError(f"{path}: expected one line matching {pattern!r} to set the version, found {count}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def build_wheel(source: str, version: str, out_dir: str) -> str:
    """Build a wheel of the project at `source` that reports `version`; its path in `out_dir`."""
    parse_version(version, "--version")
    with tempfile.TemporaryDirectory(prefix="oca-build-") as tmp:
        tree = os.path.join(tmp, "src")
        os.makedirs(tree)
        for name in _SOURCES:
            src = os.path.join(source, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tree, name), ignore=_IGNORE)
            elif os.path.isfile(src):
                shutil.copy2(src, os.path.join(tree, name))
            else:
                raise OcaError(f"{source} has no {name}: not a checkout of this project")
        _rewrite(os.path.join(tree, "pyproject.toml"), r'^version = "[^"]*"$', f'version = "{version}"')
        _rewrite(os.path.join(tree, "oca", "__init__.py"), r'^__version__ = "[^"]*"$', f'__version__ = "{version}"')
        wheels = os.path.join(tmp, "wheels")
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels,
                                 tree], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise OcaError(f"pip wheel failed ({result.returncode}): {' | '.join(tail)}")
        built = [n for n in os.listdir(wheels) if n.endswith(".whl")]
        if len(built) != 1:
            raise OcaError(f"pip wheel made {built!r}, expected one wheel")
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, built[0])
        shutil.move(os.path.join(wheels, built[0]), target)
    return target


def sign(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """manifest.sig: the Ed25519 signature over the manifest's bytes, naming the key that made it."""
    document = {"key_id": key_id(key.public_key()), "alg": "Ed25519",
                "signature": base64.b64encode(key.sign(manifest)).decode()}
    return json.dumps(document, indent=2).encode() + b"\n"


def pack_bundle(wheel: str, version: str, key: Ed25519PrivateKey, out: str, *, min_version: str | None = None,
                rollback: bool = False) -> Manifest:
    """Write the bundle of `wheel` (a release reporting `version`) to `out`, signed with `key`."""
    parse_version(version, "--version")
    if min_version is not None:
        parse_version(min_version, "--min-version")
    digest, size = hashlib.sha256(), 0
    with open(wheel, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    manifest = Manifest(version=version, min_version=min_version, rollback=rollback,
                        built_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        payload_name=os.path.basename(wheel), payload_kind="wheel", payload_size=size,
                        payload_sha256=digest.hexdigest())
    data = manifest.to_bytes()
    partial = out + ".part"
    with open(wheel, "rb") as payload, open(partial, "wb") as fh:
        write_bundle(fh, data, sign(data, key), payload, manifest.payload_name, size)
    os.replace(partial, out)
    return manifest

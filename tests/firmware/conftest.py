"""Firmware fixtures: a signing key, bundles made in memory, (once per session) a real wheel of V+1, and
what the live-box tests share (a box that takes firmware, admin POSTs, a release with a sick /healthz)."""

from __future__ import annotations

import io
import json
import os
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.version import Version

from oca import __version__
from oca.firmware.build import pack_bundle, sign
from oca.firmware.bundle import write_bundle
from oca.firmware.keys import write_keypair
from oca.firmware.verify import Manifest
from tests.conftest import Box

RUNNING = Version(__version__)
NEXT = f"{RUNNING.major}.{RUNNING.minor}.{RUNNING.micro + 1}"  # the version of tests/conftest.py's next_wheel
OBJECTS = {"titles/1/master.m3u8": b"#EXTM3U\n", "titles/1/720p/seg_00001.m4s": os.urandom(200_000)}
SEGMENT = "/titles/1/720p/seg_00001.m4s"


def firmware_box(box_factory: Callable[..., Box], keys: dict[str, Any], *, fetch: dict[str, Any] | None = None,
                 **firmware: Any) -> Box:
    """A box holding OBJECTS that trusts the `keys` fixture's signer."""
    extra = {"fetch": fetch} if fetch else {}
    return box_factory(OBJECTS, firmware={"trusted_keys_file": keys["trusted_file"], "health_timeout": "10s",
                                          **firmware}, **extra)


def admin_post(box: Box, path: str, data: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, answer) of a POST to the box's admin port: the JSON answer on 2xx, the error's text otherwise."""
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}{path}", data=data, method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]


def sick_healthz(text: str) -> str:
    """oca/serve/handler.py rewritten so /healthz answers 503 (and all else is served as usual)."""
    hook = 'if target == b"/healthz":\n'
    assert text.count(hook) == 1
    return text.replace(hook, hook + '            return self.error(req, 503, "sick release")\n')


def manifest_for(payload: bytes, version: str, name: str = "", **fields: Any) -> Manifest:
    import hashlib

    return Manifest(version=version, min_version=fields.get("min_version"), rollback=fields.get("rollback", False),
                    built_at="2025-01-01T00:00:00Z", payload_name=name or f"oca-{version}-py3-none-any.whl",
                    payload_kind="wheel", payload_size=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())


def bundle_bytes(key: Ed25519PrivateKey, payload: bytes, version: str, **fields: Any) -> bytes:
    """A bundle in memory (any payload: verification does not look inside the wheel)."""
    manifest = manifest_for(payload, version, **fields)
    data = manifest.to_bytes()
    out = io.BytesIO()
    write_bundle(out, data, sign(data, key), payload, manifest.payload_name)
    return out.getvalue()


def doctor_wheel(wheel: str, version: str, out_dir: str, replace: dict[str, Callable[[str], str]] | None = None) -> str:
    """A copy of `wheel` that reports `version` (file name and oca.__version__), with some files rewritten."""
    edits: dict[str, Callable[[str], str]] = {
        "oca/__init__.py": lambda text: re.sub(r'^__version__ = "[^"]*"$', f'__version__ = "{version}"', text,
                                              flags=re.M),
        **(replace or {}),
    }
    target = os.path.join(out_dir, f"oca-{version}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename in edits:
                data = edits[info.filename](data.decode()).encode()
            dst.writestr(info.filename, data)
    return target


@pytest.fixture(scope="session")
def keys(tmp_path_factory: Any) -> dict[str, Any]:
    """A trusted signing key (with its trusted_keys_file) and a stranger's key."""
    root = tmp_path_factory.mktemp("keys")
    public, _ = write_keypair(str(root / "signer.pem"))
    from oca.firmware.keys import load_signing_key

    return {"signer": load_signing_key(str(root / "signer.pem")), "signer_path": str(root / "signer.pem"),
            "trusted_file": public, "stranger": Ed25519PrivateKey.generate()}


@pytest.fixture(scope="session")
def bundle_of(keys: dict[str, Any], next_wheel: str, tmp_path_factory: Any) -> Callable[..., str]:
    """bundle_of(version, replace=..., key=..., **manifest fields): a bundle file of the session's wheel,
    made to report `version` (and with files rewritten)."""
    root = tmp_path_factory.mktemp("bundles")
    made: dict[str, str] = {}

    def make(version: str, *, tag: str = "", replace: dict[str, Callable[[str], str]] | None = None,
             key: Ed25519PrivateKey | None = None, **fields: Any) -> str:
        name = f"{version}{tag}"
        if name in made:
            return made[name]
        work = root / name
        work.mkdir()
        wheel = next_wheel if version == NEXT and not replace else doctor_wheel(next_wheel, version, str(work), replace)
        out = str(work / "bundle.tar")
        pack_bundle(wheel, version, key or keys["signer"], out, **fields)
        made[name] = out
        return out

    return make

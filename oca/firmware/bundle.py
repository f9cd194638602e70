"""The bundle file: what a release travels in, and reading one back without trusting it yet.

A bundle is an uncompressed tar (the wheel inside is already compressed) of exactly three regular files,
in this order:

    manifest.json       {"format": "oca-firmware/1", "version", "min_version", "rollback", "built_at",
                         "payload": {"name", "kind": "wheel", "size", "sha256"}}
    manifest.sig        {"key_id", "alg": "Ed25519", "signature": base64 of the signature over manifest.json's bytes}
    payload/<name>      the release: a wheel of this project (`pip wheel --no-deps`), whose `oca` package
                        reports the manifest's version

Rules kept here:
- Reading is one sequential pass (tar stream mode): the payload is hashed while it is copied to a sink,
  so a 200 MiB bundle is never held in memory and never read twice.
- Anything but those three members (links, devices, other names, members out of order, oversized
  manifest or signature) is a BundleRejected; so is a tar that ends early (a truncated upload).
- Nothing here decides whether to trust the bundle: that is oca.firmware.verify.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from dataclasses import dataclass
from typing import IO

from oca.firmware.errors import BundleRejected, BundleTooLarge

FORMAT = "oca-firmware/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PAYLOAD_DIR = "payload/"
_MAX_MANIFEST = 64 * 1024
_MAX_SIGNATURE = 4 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Unverified:
    """What a bundle holds, as read: nothing here is trusted until verify() says so."""

    manifest: bytes
    signature: bytes
    payload_name: str
    payload_size: int
    payload_sha256: str


def write_bundle(out: IO[bytes], manifest: bytes, signature: bytes, payload: bytes | IO[bytes],
                 payload_name: str, payload_size: int | None = None) -> None:
    """Write the three members as a tar to `out` (payload given as bytes or a file of `payload_size` bytes)."""
    mtime = int(time.time())
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((MANIFEST, manifest), (SIGNATURE, signature)):
            _add(tar, name, io.BytesIO(data), len(data), mtime)
        if isinstance(payload, bytes):
            _add(tar, PAYLOAD_DIR + payload_name, io.BytesIO(payload), len(payload), mtime)
        else:
            assert payload_size is not None
            _add(tar, PAYLOAD_DIR + payload_name, payload, payload_size, mtime)


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    tar.addfile(info, data)


class _Capped(io.RawIOBase):
    """A reader that refuses to go past `limit` bytes (an endless or oversized bundle)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise BundleTooLarge(f"bundle is larger than firmware.max_bundle_size ({self.limit} bytes)")
        buffer[: len(data)] = data
        return len(data)


def read_bundle(source: IO[bytes], max_size: int, sink: IO[bytes] | None = None) -> Unverified:
    """Read a bundle from `source` in one pass, copying the payload to `sink` (if given) while hashing it.

    BundleTooLarge past `max_size` bytes; BundleRejected for a truncated or malformed bundle."""
    capped = io.BufferedReader(_Capped(source, max_size), _CHUNK)
    try:
        with tarfile.open(fileobj=capped, mode="r|") as tar:
            members = iter(tar)
            manifest = _small(tar, next(members, None), MANIFEST, _MAX_MANIFEST)
            signature = _small(tar, next(members, None), SIGNATURE, _MAX_SIGNATURE)
            info = next(members, None)
            if info is None:
                raise BundleRejected("bundle has no payload (truncated?)")
            name = info.name.removeprefix(PAYLOAD_DIR)
            if not info.isreg() or not info.name.startswith(PAYLOAD_DIR) or not name or "/" in name \
                    or name.startswith("."):
                raise BundleRejected(f"unexpected member {info.name!r} where the payload/<file> should be")
            digest, size = hashlib.sha256(), 0
            stream = tar.extractfile(info)
            assert stream is not None
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
            extra = next(members, None)
            if extra is not None:
                raise BundleRejected(f"unexpected member {extra.name!r} after the payload")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleRejected(f"bundle is truncated or not a tar archive: {exc}") from None
    return Unverified(manifest, signature, name, size, digest.hexdigest())


def _small(tar: tarfile.TarFile, info: tarfile.TarInfo | None, want: str, limit: int) -> bytes:
    if info is None:
        raise BundleRejected(f"bundle has no {want} (truncated?)")
    if info.name != want or not info.isreg():
        raise BundleRejected(f"expected {want} in the bundle, found {info.name!r}")
    if info.size > limit:
        raise BundleRejected(f"{want} is {info.size} bytes, more than the {limit} a bundle may carry")
    stream = tar.extractfile(info)
    assert stream is not None
    data = stream.read()
    if len(data) != info.size:
        raise BundleRejected(f"bundle is truncated inside {want}")
    return data

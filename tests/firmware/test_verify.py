"""Pure verification: what a box refuses and why (TUF's attack list as far as it applies), no box, no pip."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oca.errors import ConfigError, OcaError
from oca.firmware.bundle import read_bundle
from oca.firmware.errors import BundleRejected, BundleTooLarge, VersionRefused
from oca.firmware.keys import key_id, parse_trusted_keys, private_pem, public_pem
from oca.firmware.releases import Release, Releases
from oca.firmware.verify import verify
from tests.firmware.conftest import bundle_bytes

SIGNER = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()
TRUSTED = {key_id(SIGNER.public_key()): SIGNER.public_key()}
PAYLOAD = os.urandom(50_000)
RUNNING = "1.0"
MAX = 1 << 20


def good(version: str = "1.1", **fields: Any) -> bytes:
    return bundle_bytes(SIGNER, PAYLOAD, version, **fields)


def flip(data: bytes, needle: bytes, offset: int = 0) -> bytes:
    at = data.index(needle) + offset
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


def resigned_sig(data: bytes, mutate: Callable[[dict[str, Any]], None]) -> bytes:
    """The bundle with its manifest.sig document changed (same length kept by padding the JSON)."""
    start = data.index(b'{\n  "key_id"')
    end = data.index(b"}\n", start) + 2
    document = json.loads(data[start:end])
    mutate(document)
    text = json.dumps(document).encode()
    text = text[:-1] + b" " * (end - start - len(text)) + b"}"
    assert len(text) == end - start, "the new signature document must not be longer"
    return data[:start] + text + data[end:]


def check(data: bytes, running: str = RUNNING, max_size: int = MAX) -> str:
    return verify(read_bundle(io.BytesIO(data), max_size), TRUSTED, running).version


def bad_signature(data: bytes) -> bytes:
    def corrupt(doc: dict[str, Any]) -> None:
        doc["signature"] = doc["signature"][:10] + ("A" if doc["signature"][10] != "A" else "B") + doc["signature"][11:]
    return resigned_sig(data, corrupt)


def unknown_key(data: bytes) -> bytes:
    return bundle_bytes(STRANGER, PAYLOAD, "1.1")


CASES: list[tuple[str, Callable[[], bytes], str, type[OcaError], str]] = [
    ("tampered payload byte", lambda: flip(good(), PAYLOAD[1000:1032]), RUNNING, BundleRejected,
     "payload digest mismatch"),
    ("tampered manifest (version)", lambda: replace_once(good(), b'"version": "1.1"', b'"version": "9.1"'), RUNNING,
     BundleRejected, "bad signature"),
    ("unsigned rollback flag flipped", lambda: replace_once(good("0.9"), b'"rollback": false', b'"rollback": true '),
     RUNNING, BundleRejected, "bad signature"),
    ("unknown key", lambda: unknown_key(good()), RUNNING, BundleRejected, "is not a trusted key"),
    ("bad signature", lambda: bad_signature(good()), RUNNING, BundleRejected, "bad signature"),
    ("older version", lambda: good("0.9"), RUNNING, VersionRefused, "older than the running 1.0"),
    ("equal version", lambda: good("1.0"), RUNNING, VersionRefused, "the same as the running 1.0"),
    ("pre-release of the running version", lambda: good("1.0rc1"), RUNNING, VersionRefused, "older than"),
    ("min_version above the running one", lambda: good("2.0", min_version="1.5"), RUNNING, VersionRefused,
     "below the bundle's min_version 1.5"),
    ("signed rollback under min_version", lambda: good("0.9", rollback=True, min_version="1.1"), RUNNING,
     VersionRefused, "min_version"),
    ("not a PEP 440 version", lambda: good("banana"), RUNNING, BundleRejected, "not a PEP 440 version"),
    ("truncated in the payload", lambda: good()[:30_000], RUNNING, BundleRejected, "truncated"),
    ("truncated in the manifest", lambda: good()[:600], RUNNING, BundleRejected, "truncated"),
    ("truncated before the payload", lambda: good()[:2048], RUNNING, BundleRejected, "truncated"),
    ("empty", lambda: b"", RUNNING, BundleRejected, "empty file"),
    ("not a tar", lambda: b"PK\x03\x04" + os.urandom(4000), RUNNING, BundleRejected, "not a tar"),
    ("oversized", lambda: good(), RUNNING, BundleTooLarge, "larger than firmware.max_bundle_size"),
]


@pytest.mark.parametrize("make, running, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused(make: Callable[[], bytes], running: str, error: type[OcaError], message: str) -> None:
    data = make()
    max_size = 20_000 if error is BundleTooLarge else MAX
    with pytest.raises(error, match=re.escape(message)):
        check(data, running, max_size)


@pytest.mark.parametrize("version, fields, running", [
    ("1.1", {}, "1.0"),
    ("1.0.1", {"min_version": "1.0"}, "1.0"),
    ("1.0.post1", {}, "1.0"),
    ("0.9", {"rollback": True}, "1.0"),  # an explicit, signed downgrade
    ("1.0", {"rollback": True}, "1.0"),  # a signed reinstall of the same version
])
def test_accepted(version: str, fields: dict[str, Any], running: str) -> None:
    assert check(good(version, **fields), running) == version


def test_a_payload_swapped_for_another_signed_release_is_refused() -> None:
    """Mix-and-match: a valid manifest with the payload of another valid bundle."""
    other = bundle_bytes(SIGNER, os.urandom(len(PAYLOAD)), "1.1")
    ours = good()
    with tarfile.open(fileobj=io.BytesIO(ours)) as tar:
        offset = tar.getmember("payload/oca-1.1-py3-none-any.whl").offset_data
    with tarfile.open(fileobj=io.BytesIO(other)) as tar:
        other_offset = tar.getmember("payload/oca-1.1-py3-none-any.whl").offset_data
    mixed = ours[:offset] + other[other_offset:other_offset + len(PAYLOAD)] + ours[offset + len(PAYLOAD):]
    with pytest.raises(BundleRejected, match="tampered payload"):
        check(mixed)


def test_extra_and_reordered_members_are_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("payload/x.whl")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(BundleRejected, match=re.escape("expected manifest.json")):
        check(out.getvalue())
    data = good()
    extra = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=extra, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    with pytest.raises(BundleRejected, match="unexpected member 'evil'"):
        check(extra.getvalue())


def test_an_endless_stream_stops_at_the_cap() -> None:
    """A payload member that declares a terabyte and keeps coming: refused at max_size, not read to the end."""
    head = good()
    with tarfile.open(fileobj=io.BytesIO(head)) as tar:
        member = tar.getmember("payload/oca-1.1-py3-none-any.whl")
    member.size = 1 << 40
    prefix = head[:member.offset] + member.tobuf(tarfile.PAX_FORMAT)

    class Endless(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = len(buffer)
            chunk = (prefix[self.sent:self.sent + n] if self.sent < len(prefix) else b"") or os.urandom(n)
            buffer[:len(chunk)] = chunk
            self.sent += len(chunk)
            return len(chunk)

    stream = Endless()
    with pytest.raises(BundleTooLarge):
        read_bundle(stream, 4 << 20)  # type: ignore[arg-type]
    assert stream.sent < 6 << 20


def test_trusted_keys_file() -> None:
    other = Ed25519PrivateKey.generate()
    text = public_pem(SIGNER.public_key()) + b"\n" + public_pem(other.public_key())
    assert set(parse_trusted_keys(text, "keys.pem")) == {key_id(SIGNER.public_key()), key_id(other.public_key())}
    with pytest.raises(ConfigError, match="public keys only"):
        parse_trusted_keys(text + private_pem(other), "keys.pem")
    with pytest.raises(ConfigError, match="no PUBLIC KEY block"):
        parse_trusted_keys(b"", "keys.pem")


def _wheel(path: str, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_release_slots_keep_two_and_refuse_escapes(tmp_path: Any) -> None:
    releases = Releases(str(tmp_path / "releases"), "1.0")
    assert releases.current == Release("1.0") and releases.previous is None
    for version in ("1.1", "1.2", "1.3"):
        wheel = _wheel(str(tmp_path / f"oca-{version}-py3-none-any.whl"), {"oca/serve/worker.py": b"", "oca/x": b""})
        release = releases.unpack(wheel, version)
        releases.commit(release)
    assert releases.kept() == ["1.3", "1.2"]
    assert sorted(os.listdir(tmp_path / "releases")) == ["1.2", "1.3", "state.json"]
    again = Releases(str(tmp_path / "releases"), "1.0")  # as after a restart
    assert (again.current.version, again.previous and again.previous.version) == ("1.3", "1.2")
    with pytest.raises(VersionRefused, match="is the one running"):
        again.unpack(_wheel(str(tmp_path / "oca-1.3-py3-none-any.whl"), {"oca/serve/worker.py": b""}), "1.3")
    evil = _wheel(str(tmp_path / "oca-1.4-py3-none-any.whl"), {"oca/serve/worker.py": b"", "../../escape": b"x"})
    with pytest.raises(BundleRejected, match="outside the release"):
        again.unpack(evil, "1.4")
    assert not os.path.exists(tmp_path / "escape")
    with pytest.raises(BundleRejected, match=re.escape("manifest says oca 1.5")):
        again.unpack(_wheel(str(tmp_path / "oca-1.6-py3-none-any.whl"), {}), "1.5")

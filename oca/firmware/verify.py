"""Deciding whether a bundle may be installed: pure functions over bytes, keys and version strings.

Rules kept here (The Update Framework's attack list, as far as it applies to one signed manifest):
- The signature is checked first, over manifest.json's exact bytes, with the trusted key the signature
  names; nothing in the manifest is read before that. A key this box does not trust and a signature that
  does not verify are told apart in the message.
- The payload's size and SHA-256 must equal what the signed manifest says (a tampered payload, a
  truncated one, a payload swapped for another release).
- Versions are PEP 440 (`packaging.version`). Anti-rollback: a version older than or equal to the running
  one is refused unless the signed manifest says `"rollback": true` (an operator's explicit, signed
  downgrade); a running version below the manifest's `min_version` is refused (upgrade through an
  intermediate release).
- Every refusal is an OcaError whose message names the value that was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.version import InvalidVersion, Version

from oca.firmware.bundle import FORMAT, Unverified
from oca.firmware.errors import BundleRejected, VersionRefused


@dataclass(frozen=True)
class Manifest:
    version: str
    min_version: str | None
    rollback: bool
    built_at: str
    payload_name: str
    payload_kind: str
    payload_size: int
    payload_sha256: str
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "version": self.version, "min_version": self.min_version,
                "rollback": self.rollback, "built_at": self.built_at,
                "payload": {"name": self.payload_name, "kind": self.payload_kind, "size": self.payload_size,
                            "sha256": self.payload_sha256}}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n"


def parse_version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise BundleRejected(f"{what} {text!r} is not a PEP 440 version") from None


def check_signature(manifest: bytes, signature: bytes, trusted: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key that signed `manifest`; BundleRejected otherwise."""
    try:
        document = json.loads(signature)
        key_id, alg, encoded = document["key_id"], document["alg"], document["signature"]
        if not isinstance(key_id, str) or not isinstance(encoded, str):
            raise TypeError
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise BundleRejected("manifest.sig is not a signature document (key_id, alg, signature)") from None
    if alg != "Ed25519":
        raise BundleRejected(f"manifest.sig uses alg {alg!r}; firmware is signed with Ed25519 only")
    key = trusted.get(key_id)
    if key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise BundleRejected(f"bundle is signed by key {key_id}, which is not a trusted key (trusted: {known})")
    try:
        key.verify(raw, manifest)
    except InvalidSignature:
        raise BundleRejected(f"bad signature: manifest.json does not match its signature by key {key_id} "
                             "(tampered manifest or signature)") from None
    return key_id


def parse_manifest(data: bytes) -> Manifest:
    """The manifest's fields, checked for type; BundleRejected naming the field."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise BundleRejected("manifest.json is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BundleRejected("manifest.json must be a JSON object")
    if raw.get("format") != FORMAT:
        raise BundleRejected(f"manifest format {raw.get('format')!r} is not {FORMAT!r}")
    payload = raw.get("payload")
    if not isinstance(payload, dict):
        raise BundleRejected("manifest.json has no payload object")

    def field(source: dict[str, Any], name: str, kind: type | tuple[type, ...], label: str = "") -> Any:
        value = source.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise BundleRejected(f"manifest field {label or name} is missing or of the wrong type: {value!r}")
        return value

    manifest = Manifest(
        version=field(raw, "version", str), min_version=field(raw, "min_version", (str, type(None))),
        rollback=field(raw, "rollback", bool), built_at=field(raw, "built_at", str),
        payload_name=field(payload, "name", str, "payload.name"),
        payload_kind=field(payload, "kind", str, "payload.kind"),
        payload_size=field(payload, "size", int, "payload.size"),
        payload_sha256=field(payload, "sha256", str, "payload.sha256"))
    parse_version(manifest.version, "version")
    if manifest.min_version is not None:
        parse_version(manifest.min_version, "min_version")
    if manifest.payload_kind != "wheel":
        raise BundleRejected(f"payload kind {manifest.payload_kind!r} is not 'wheel'")
    return manifest


def check_payload(manifest: Manifest, bundle: Unverified) -> None:
    if bundle.payload_name != manifest.payload_name:
        raise BundleRejected(f"payload is {bundle.payload_name!r}, the manifest names {manifest.payload_name!r}")
    if bundle.payload_size != manifest.payload_size:
        raise BundleRejected(f"payload is {bundle.payload_size} bytes, the manifest says {manifest.payload_size} "
                             "(truncated or tampered payload)")
    if bundle.payload_sha256 != manifest.payload_sha256:
        raise BundleRejected(f"payload digest mismatch: sha256 {bundle.payload_sha256}, the manifest says "
                             f"{manifest.payload_sha256} (tampered payload)")


def check_version(manifest: Manifest, running: str) -> None:
    """Anti-rollback and min_version, against the version this box runs now."""
    new, current = parse_version(manifest.version, "version"), Version(running)
    if manifest.min_version is not None and current < Version(manifest.min_version):
        raise VersionRefused(f"this box runs {running}, below the bundle's min_version {manifest.min_version}: "
                             "install an intermediate release first")
    if new <= current and not manifest.rollback:
        relation = "the same as" if new == current else "older than"
        raise VersionRefused(f"version {manifest.version} is {relation} the running {running} (anti-rollback): "
                             "a downgrade needs a bundle built and signed with --rollback")


def verify(bundle: Unverified, trusted: Mapping[str, Ed25519PublicKey], running: str) -> Manifest:
    """The manifest of a bundle this box may install now; BundleRejected or VersionRefused otherwise."""
    check_signature(bundle.manifest, bundle.signature, trusted)
    manifest = parse_manifest(bundle.manifest)
    check_payload(manifest, bundle)
    check_version(manifest, running)
    return manifest

"""The lab's firmware signing key: made once, kept across runs, its public half what boxes trust."""

from __future__ import annotations

import os
from pathlib import Path

from oca.firmware.keys import key_id, load_signing_key, load_trusted_keys
from oca.lab import Lab, LabConfig


def test_the_lab_makes_its_firmware_key_once_and_rewrites_the_public_half_from_it(tmp_path: Path) -> None:
    lab = Lab(LabConfig(workdir=str(tmp_path)))
    lab._secrets()
    key = load_signing_key(lab.paths.firmware_key)
    assert os.stat(lab.paths.firmware_key).st_mode & 0o777 == 0o600
    assert list(load_trusted_keys(lab.paths.firmware_public)) == [key_id(key.public_key())]

    os.unlink(lab.paths.firmware_public)  # a lost public half comes back from the private key
    lab._secrets()
    assert list(load_trusted_keys(lab.paths.firmware_public)) == [key_id(key.public_key())]
    assert load_signing_key(lab.paths.firmware_key).private_bytes_raw() == key.private_bytes_raw()

    os.unlink(lab.paths.firmware_key)  # a lost private key: a new pair, the stale public half replaced
    lab._secrets()
    fresh = load_signing_key(lab.paths.firmware_key)
    assert key_id(fresh.public_key()) != key_id(key.public_key())
    assert list(load_trusted_keys(lab.paths.firmware_public)) == [key_id(fresh.public_key())]

"""Shared fixtures for the storage tests: real directories under tmp_path, a fake clock, test blobs."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from oca.config.model import PromotionConfig, StorageConfig, TierConfig
from oca.storage import Store
from tests.clock import FakeClock


def blob(size: int, seed: int | str = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def storage_config(root: Path, *, ssd: int = 10_000, hdd: int = 20_000, hits: int = 3,
                   window: float = 60.0, flush: float = 1.0, policy: str = "lru",
                   ssd_admission: str = "returning") -> StorageConfig:
    """Unless told otherwise: LRU, and an SSD that takes only hot objects (LRU admits no returning ones), so a
    cold put lands on the HDD -- the mechanics (faults, crashes, moves) are tested with a known placement;
    the default policy and placement are tested in test_store_policy.py."""
    return StorageConfig(
        state_dir=str(root / "state"),
        policy=policy,
        tiers=(TierConfig("ssd", str(root / "ssd"), ssd, ssd_admission), TierConfig("hdd", str(root / "hdd"), hdd)),
        promotion=PromotionConfig(hits=hits, window=window),
        access_flush_interval=flush,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> StorageConfig:
    return storage_config(tmp_path)


@pytest.fixture
def store(config: StorageConfig, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(config, clock)
    yield s
    s.close()


@pytest.fixture
def src(tmp_path: Path) -> Callable[..., str]:
    """src(data) or src(size=n, seed=s): writes a source file and returns its path."""
    folder = tmp_path / "src"
    folder.mkdir()
    counter = iter(range(1_000_000))

    def make(data: bytes | None = None, *, size: int = 1000, seed: int | str = 0) -> str:
        path = folder / f"f{next(counter)}"
        path.write_bytes(blob(size, seed) if data is None else data)
        return str(path)

    return make


def tier_files(root: str, sub: str = "objects") -> list[str]:
    found: list[str] = []
    for folder, _dirs, names in os.walk(os.path.join(root, sub)):
        found.extend(os.path.join(folder, n) for n in names)
    return sorted(found)


def assert_consistent(store: Store) -> None:
    """Status, list() and the files on disk agree, and no tier is over capacity."""
    status = store.status()
    objects = store.list()
    tiers = status["tiers"]
    assert isinstance(tiers, list)
    for tier in tiers:
        on_tier = [o for o in objects if o.tier == tier["name"]]
        if tier["state"] != "failed":
            assert tier["used"] == sum(o.size for o in on_tier)
            assert tier["objects"] == len(on_tier)
        assert tier["used"] <= tier["capacity"], tier
    for info in objects:
        assert os.path.getsize(info.path) == info.size
        assert os.path.isfile(info.path + ".meta")

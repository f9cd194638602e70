"""Crashes: a real process killed mid-write (SIGKILL, or os._exit at a chosen point), then Store.open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oca.config.model import StorageConfig
from oca.storage import Store
from oca.storage.files import hash_file

from .conftest import storage_config, tier_files

HELPER = str(Path(__file__).with_name("proc_helper.py"))


def config_json(config: StorageConfig) -> str:
    return json.dumps({"state_dir": config.state_dir, "policy": config.policy,
                       "tiers": [[t.name, t.path, t.capacity, t.admission] for t in config.tiers]})


def check_everything_present_is_whole(config: StorageConfig, root: Path) -> dict[str, str]:
    with Store.open(config) as store:
        objects = store.list()
        for info in objects:
            assert hash_file(info.path) == (info.size, info.digest), info.key
        expected = sorted([i.path for i in objects] + [i.path + ".meta" for i in objects])
        on_disk = sorted(tier_files(str(root / "ssd")) + tier_files(str(root / "hdd")))
        assert on_disk == expected  # nothing orphaned
        for tier in ("ssd", "hdd"):
            assert tier_files(str(root / tier), "tmp") == []
        return {i.key: i.digest for i in objects}


@pytest.mark.slow
@pytest.mark.parametrize(("kill_after", "size", "delay", "roomy"), [
    (12, 300_000, 0.002, True),
    (25, 300_000, 0.006, False),  # small tiers: evictions and demotions are under way too
    (40, 20_000, 0.0005, True),
])
def test_kill_9_mid_put_leaves_only_whole_objects(tmp_path: Path, kill_after: int, size: int, delay: float,
                                                  roomy: bool) -> None:
    config = storage_config(tmp_path, ssd=50_000_000 if roomy else 1_000_000,
                            hdd=50_000_000 if roomy else 3_000_000)
    proc = subprocess.Popen([sys.executable, HELPER, config_json(config), "loop", "100", str(size)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done: dict[str, str] = {}
    try:
        while len(done) < kill_after:
            line = proc.stdout.readline()
            assert line, f"helper exited early with {proc.wait()}"
            _, key, digest = line.split()
            done[key] = digest
        time.sleep(delay)  # land inside the next put
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in proc.stdout:  # puts that returned before the kill but were not read yet: a fast put may be
        _, key, digest = line.split()  # several ahead of this reader
        done[key] = digest
    present = check_everything_present_is_whole(config, tmp_path)
    assert all(present[k] == done[k] for k in done if k in present)
    if roomy:  # nothing was evicted, so every put that returned must have survived
        assert set(done) <= set(present)
        assert len(present) <= len(done) + 1


def run_until_death(config: StorageConfig, point: str) -> None:
    result = subprocess.run([sys.executable, HELPER, config_json(config), "die-at", point],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    assert result.stdout.strip() == "ready"


def test_crash_after_rename_before_index_write_adopts_the_verified_object(tmp_path: Path) -> None:
    config = storage_config(tmp_path)
    run_until_death(config, "before-index-put")
    present = check_everything_present_is_whole(config, tmp_path)
    assert set(present) == {"victim", "new"}


def test_crash_between_purge_and_unlink_does_not_resurrect(tmp_path: Path) -> None:
    config = storage_config(tmp_path)
    run_until_death(config, "before-unlink")
    assert check_everything_present_is_whole(config, tmp_path) == {}
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    assert check_everything_present_is_whole(config, tmp_path) == {}


def test_crash_between_the_object_and_sidecar_renames_leaves_nothing(tmp_path: Path) -> None:
    config = storage_config(tmp_path)
    run_until_death(config, "between-renames")
    assert set(check_everything_present_is_whole(config, tmp_path)) == {"victim"}


def test_crash_mid_promotion_keeps_exactly_one_copy(tmp_path: Path) -> None:
    config = storage_config(tmp_path)
    run_until_death(config, "mid-promotion")
    assert set(check_everything_present_is_whole(config, tmp_path)) == {"victim"}
    with Store.open(config) as store:
        assert store.get("victim").tier == "ssd"  # type: ignore[union-attr]

"""StoreView: a read-only view that follows an owner running in another process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oca.config.model import StorageConfig
from oca.errors import StorageError
from oca.storage import Store, StoreView
from tests.clock import FakeClock

from .conftest import digest_of, storage_config
from .test_store_crash import HELPER, config_json

Src = Callable[..., str]


class Owner:
    """The proc_helper "serve" mode: a Store in a child process, driven line by line."""

    def __init__(self, config: StorageConfig) -> None:
        self.proc = subprocess.Popen([sys.executable, HELPER, config_json(config), "serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer[:1] == ["ok"], (line, answer, self.proc.poll())
        return answer[1:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.ask("quit")
        self.proc.wait(timeout=10)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    o = Owner(storage_config(tmp_path))
    yield o
    o.stop()


def test_view_follows_an_owner_in_another_process(owner: Owner, tmp_path: Path, src: Src) -> None:
    config = storage_config(tmp_path)
    data = Path(src(size=5000, seed=7)).read_bytes()
    owner.ask(f"put titles/a/1.ts {src(data)}")
    with StoreView.open(config) as view:
        assert not view.changed()
        info = view.lookup("titles/a/1.ts")
        assert info is not None and (info.tier, info.size, info.digest) == ("hdd", 5000, digest_of(data))
        assert Path(info.path).read_bytes() == data
        assert owner.ask(f"hot titles/a/2.ts {src(size=10)}") == ["ssd", digest_of(Path(src(size=10)).read_bytes())]
        assert view.lookup("titles/a/2.ts") is not None  # a new object: seen without a generation bump
        assert not view.changed()
        assert owner.ask("evict titles/a/1.ts") == ["True"]
        assert view.changed()
        assert not view.changed()  # once per bump
        assert view.lookup("titles/a/1.ts") is None


def test_view_keeps_working_across_an_owner_restart_with_rebuild(config: StorageConfig, clock: FakeClock,
                                                                 src: Src) -> None:
    with Store.open(config, clock) as store:
        store.put_file(src(size=10), "k")
    with StoreView.open(config) as view:
        Path(config.state_dir, "index.sqlite").unlink()
        with Store.open(config, clock) as store:  # rebuilds: a new index file under the view
            assert view.changed()
            store.put_file(src(size=20, seed=2), "k2")
            assert view.lookup("k") is not None and view.lookup("k2") is not None


def test_view_works_while_the_owner_is_closed(config: StorageConfig, clock: FakeClock, src: Src) -> None:
    with Store.open(config, clock) as store:
        store.put_file(src(size=10), "k")
    with StoreView.open(config) as view:
        assert view.lookup("k") is not None


def test_view_before_any_owner_is_a_clear_error(config: StorageConfig) -> None:
    with pytest.raises(StorageError, match="has not opened it yet"):
        StoreView.open(config)

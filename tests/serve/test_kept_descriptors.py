"""Bodies of SENDFILE_FROM bytes and up: the worker's object cache keeps their file's descriptor open beside the
bytes, and the memo's replay sends them by sendfile from it (oca.serve.objects, oca.serve.connection). The
descriptor lives exactly as long as the body; a send the socket does not take whole, or a file that cannot be
read, is finished from the bytes in memory, so the client always gets the object's exact bytes."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from loadtest.bench import Signer
from oca.config.model import HttpConfig, MemoryCacheConfig
from oca.serve import connection as connection_module
from oca.serve.objects import ENTRY_BYTES, SENDFILE_FROM, ObjectCache
from oca.storage import StoreView
from tests.conftest import InProcessBox, start_inprocess
from tests.serve.test_memo import Client, FakeView, get, handled, on_loop, status, without_date

BIG = SENDFILE_FROM


def _cache(tmp_path: Path, size: int, *, bodies: int = 4) -> tuple[ObjectCache, FakeView, int]:
    path = tmp_path / "obj"
    path.write_bytes(os.urandom(size))
    view = FakeView(str(path), size)
    objects = ObjectCache(cast(StoreView, view), HttpConfig(), MemoryCacheConfig(
        max_object_size=1 << 20, capacity=bodies * size + 16 * ENTRY_BYTES, max_entries=16))
    return objects, view, os.open(path, os.O_RDONLY)


@pytest.mark.parametrize("size, kept", [(BIG, True), (BIG - 1, False)])
def test_a_body_from_sendfile_from_up_keeps_its_descriptor(tmp_path: Path, size: int, kept: bool) -> None:
    objects, _, fd = _cache(tmp_path, size)
    try:
        entry = objects.get("a")
        assert entry is not None and objects.load_body(entry, fd) is not None
        assert (entry.fd >= 0) is kept and objects.kept_fds == int(kept)
        if kept:
            assert os.pread(entry.fd, size, 0) == entry.body  # its own descriptor of the same file
            assert entry.fd != fd
    finally:
        os.close(fd)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_the_descriptor_is_closed_whenever_the_body_is_let_go(tmp_path: Path) -> None:
    """Forgotten, dropped with the whole cache (a store change), or pushed out of memory by newer bodies."""
    objects, view, fd = _cache(tmp_path, BIG, bodies=2)
    try:
        def loaded(key: str) -> int:
            entry = objects.get(key)
            assert entry is not None
            objects.load_body(entry, fd)
            return entry.fd

        first = loaded("a")
        objects.forget("a")
        assert _closed(first) and objects.kept_fds == 0
        second = loaded("b")
        view.bump()
        objects.sync()
        assert _closed(second) and objects.kept_fds == 0
        pushed = loaded("c")
        loaded("d")
        open_before = set(os.listdir("/proc/self/fd"))
        loaded("e")  # room for two bodies: c's goes, and its descriptor with it (e's may take its number)
        entry = objects.get("c")
        assert entry is not None and entry.body is None and entry.fd == -1
        assert objects.kept_fds == 2 and set(os.listdir("/proc/self/fd")) == open_before  # one closed, one opened
        assert str(pushed) in open_before
    finally:
        os.close(fd)


def test_no_more_descriptors_are_kept_than_a_quarter_of_the_limit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("oca.serve.objects.resource.getrlimit", lambda _: (8, 8))
    objects, _, fd = _cache(tmp_path, BIG)
    try:
        entries = [objects.get(key) for key in "abc"]
        for entry in entries:
            assert entry is not None
            objects.load_body(entry, fd)
        assert [entry.fd >= 0 for entry in entries if entry is not None] == [True, True, False]
        assert objects.kept_fds == 2
    finally:
        os.close(fd)


# -- on a real socket ------------------------------------------------------------------------------------------

KEY = "titles/8/720p/seg_00001.m4s"
BODY = os.urandom(64 << 10)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[InProcessBox, Signer]]:
    signer = Signer(str(tmp_path))
    handle = start_inprocess(str(tmp_path), {KEY: BODY}, overrides={
        "tokens": {"required": True, "jwks_file": signer.jwks, "clock_skew": "0s"}})
    try:
        yield handle, signer
    finally:
        handle.close()


@pytest.mark.parametrize("sendfile", ["whole", "partial", "failing"])
def test_a_replayed_body_goes_by_sendfile_and_arrives_whole(box: Any, monkeypatch: pytest.MonkeyPatch,
                                                            sendfile: str) -> None:
    handle, signer = box
    request = get(signer.path(KEY))
    warm = Client(handle.port)
    assert status(warm.exchange(request)) == 200  # read from disk into memory
    warm.close()
    sent: list[int] = []
    real = os.sendfile

    def counting(out: int, fd: int, offset: int, count: int) -> int:
        if sendfile == "failing":
            raise OSError(errno.EIO, "input/output error")
        n = real(out, fd, offset, 1000 if sendfile == "partial" else count)
        sent.append(n)
        return n

    on_loop(handle, lambda: (handle.server.record_hits(), handle.server.stats.take(0)))
    client = Client(handle.port)
    normal = client.exchange(request)  # the normal path: from memory, remembered by the memo
    asked = handled(handle)
    monkeypatch.setattr(connection_module.os, "sendfile", counting)
    replayed = [client.exchange(request) for _ in range(3)]
    client.close()
    assert not asked  # all three were replays
    assert normal.endswith(BODY)
    for answer in replayed:
        assert without_date(answer) == without_date(normal)
    expected = {"whole": [len(BODY)] * 3, "partial": [1000] * 3, "failing": []}[sendfile]
    assert sent == expected
    report = on_loop(handle, lambda: (handle.server.record_hits(), handle.server.stats.take(0))[1])
    assert report.bytes_sent == [("memory", "hit", 4 * len(BODY))]


def test_a_normal_path_hit_from_memory_goes_by_sendfile_and_a_range_from_the_bytes(
        box: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests whose bytes differ each time (players' own headers) never reach the memo: the handler's plain
    hit sends by sendfile too; a range is cut from the bytes in memory."""
    handle, signer = box
    warm = Client(handle.port)
    assert status(warm.exchange(get(signer.path(KEY)))) == 200  # read from disk into memory
    warm.close()
    sent: list[int] = []
    real = os.sendfile

    def counting(out: int, fd: int, offset: int, count: int) -> int:
        n = real(out, fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(connection_module.os, "sendfile", counting)
    client = Client(handle.port)
    asked = handled(handle)
    for i in range(3):
        answer = client.exchange(get(signer.path(KEY), b"X-Request: %d" % i))
        assert status(answer) == 200 and answer.endswith(BODY)
    ranged = client.exchange(get(signer.path(KEY), b"Range: bytes=100-199"))
    client.close()
    assert len(asked) == 4  # none of them a replay
    assert status(ranged) == 206 and ranged.endswith(BODY[100:200])
    assert sent == [len(BODY)] * 3

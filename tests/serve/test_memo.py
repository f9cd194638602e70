"""The response-plan memo (oca.serve.memo): request bytes answered before as a plain hit from memory are
answered again without the parser or the handler. Pure tests of the table first (no loop, a fake clock),
then a worker on a real loopback socket, tokens required: the replayed answer is the normal path's byte for
byte but its Date, it is counted and logged alike, and everything the answer depends on (a purge, a
replace, an expired token) or any other request shape takes the normal path again."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from loadtest.bench import Signer
from oca.config.model import HttpConfig, MemoryCacheConfig
from oca.serve.memo import FOREVER, MAX_REQUEST, ResponseMemo
from oca.serve.objects import ENTRY_BYTES, CachedObject, ObjectCache
from oca.storage import ObjectInfo, Store, StoreView
from oca.tokens import mint, title_scope
from oca.tokens.paths import token_path
from tests.clock import FakeClock
from tests.conftest import InProcessBox, start_inprocess

# -- the table alone ---------------------------------------------------------------------------------------


class FakeView:
    """Every key exists as a file of `size` bytes at `path`; `bump` moves the store's generation, as a purge,
    an eviction or a replace elsewhere does, and `changed` reports it once."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self.generation_word = [0]
        self._seen = 0

    def bump(self) -> None:
        self.generation_word[0] += 1

    def changed(self) -> bool:
        if self.generation_word[0] == self._seen:
            return False
        self._seen = self.generation_word[0]
        return True

    def lookup(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, "ssd", self.path, self.size, "0" * 32, 1.0e9, False, False)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[tuple[ObjectCache, FakeView, Callable[[str], CachedObject]]]:
    body = tmp_path / "obj"
    body.write_bytes(b"x" * 100)
    view = FakeView(str(body), 100)
    # bodies get 250 bytes beside three entries (the capacity holds the entries' own memory too)
    objects = ObjectCache(cast(StoreView, view), HttpConfig(),
                          MemoryCacheConfig(max_object_size=4096, capacity=250 + 3 * ENTRY_BYTES, max_entries=16))
    fd = os.open(body, os.O_RDONLY)

    def loaded(key: str) -> CachedObject:
        entry = objects.get(key)
        assert entry is not None
        objects.load_body(entry, fd)
        return entry

    try:
        yield objects, view, loaded
    finally:
        os.close(fd)


def test_the_memo_answers_the_same_bytes_until_the_grant_expires(cache: Any) -> None:
    objects, _, loaded = cache
    clock = FakeClock(1000.0)
    memo = ResponseMemo(objects, clock)
    entry = loaded("t/a")
    memo.put(b"GET /a\r\n\r\n", entry, 1010.0)
    assert memo.get(b"GET /a\r\n\r\n") is entry
    assert memo.get(b"GET /a \r\n\r\n") is None  # other bytes, however alike
    clock.now = 1009.999
    assert memo.get(b"GET /a\r\n\r\n") is entry
    clock.now = 1010.0  # the token's expiry: the normal path checks it again (and refuses it)
    assert memo.get(b"GET /a\r\n\r\n") is None
    assert len(memo) == 0


def test_a_store_change_drops_every_plan(cache: Any) -> None:
    objects, view, loaded = cache
    memo = ResponseMemo(objects, FakeClock())
    memo.put(b"a", loaded("t/a"), FOREVER)
    memo.put(b"b", loaded("t/b"), FOREVER)
    view.bump()  # a purge, an eviction or a replace elsewhere bumped the store's generation
    assert memo.get(b"a") is None
    assert len(memo) == 0
    fresh = loaded("t/a")  # the normal path looked it up again
    memo.put(b"a", fresh, FOREVER)
    assert memo.get(b"a") is fresh


def test_an_entry_forgotten_or_pushed_out_of_memory_is_not_replayed(cache: Any) -> None:
    objects, _, loaded = cache
    memo = ResponseMemo(objects, FakeClock())
    first = loaded("t/a")
    memo.put(b"a", first, FOREVER)
    objects.forget("t/a")  # its file vanished, or the master said it is stale
    assert first.body is None and memo.get(b"a") is None
    second = loaded("t/b")
    memo.put(b"b", second, FOREVER)
    loaded("t/c")
    loaded("t/d")  # 250 bytes beside three entries hold two bodies of 100: t/b's goes
    assert second.body is None and memo.get(b"b") is None


def test_a_replay_counts_as_a_use_of_the_object(cache: Any) -> None:
    objects, _, loaded = cache
    memo = ResponseMemo(objects, FakeClock())
    a = loaded("t/a")
    memo.put(b"a", a, FOREVER)
    loaded("t/b")
    assert memo.get(b"a") is a  # t/a is now the most recently used...
    loaded("t/c")  # ...so t/b's body is the one pushed out
    assert a.body is not None and memo.get(b"a") is a


def test_the_memo_is_bounded_in_plans_and_in_request_size(cache: Any) -> None:
    objects, _, loaded = cache
    memo = ResponseMemo(objects, FakeClock(), max_plans=8)
    entry = loaded("t/a")
    for i in range(100):
        memo.put(b"GET /%d\r\n\r\n" % i, entry, FOREVER)
        assert len(memo) <= 8
    assert memo.get(b"GET /99\r\n\r\n") is entry and memo.get(b"GET /0\r\n\r\n") is None  # the oldest went
    memo.put(b"x" * (MAX_REQUEST + 1), entry, FOREVER)
    assert memo.get(b"x" * (MAX_REQUEST + 1)) is None


# -- a worker on a real socket -------------------------------------------------------------------------------

KEY = "titles/7/720p/seg_00001.m4s"
OTHER = "titles/7/720p/seg_00002.m4s"
BODY = os.urandom(8192)


class Client:
    """One keep-alive connection that sends raw bytes and reads whole responses (Content-Length framed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_only: bool = False) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        end = self.buffer.index(b"\r\n\r\n") + 4
        length = 0 if head_only else int(re.search(rb"\r\nContent-Length: (\d+)\r\n", self.buffer[:end])[1])  # type: ignore[index]
        while len(self.buffer) < end + length:
            self._read()
        answer, self.buffer = self.buffer[:end + length], self.buffer[end + length:]
        return answer

    def exchange(self, data: bytes, head_only: bool = False) -> bytes:
        self.send(data)
        return self.response(head_only)

    def closed(self) -> bool:
        return self.sock.recv(1) == b""

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def on_loop(box: InProcessBox, fn: Callable[[], Any]) -> Any:
    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), box.loop).result(10)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[InProcessBox, Signer]]:
    signer = Signer(str(tmp_path))
    handle = start_inprocess(str(tmp_path), {KEY: BODY, OTHER: b"o" * 300}, overrides={
        "tokens": {"required": True, "jwks_file": signer.jwks, "clock_skew": "0s"}})
    try:
        yield handle, signer
    finally:
        handle.close()


def handled(box: InProcessBox) -> list[bytes]:
    """The targets the handler is asked about from now on (a replay never asks it)."""
    handler = box.server.handler
    asked: list[bytes] = []
    handle = handler.handle

    def counting(req: Any) -> Any:
        asked.append(req.target)
        return handle(req)

    handler.handle = counting
    return asked


def get(path: str, *headers: bytes, method: bytes = b"GET") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: box\r\n%s\r\n" % (method, path.encode(), b"".join(h + b"\r\n" for h in headers))


def test_a_replayed_hit_is_the_normal_answer_but_its_date_and_is_counted_and_logged_alike(box: Any) -> None:
    handle, signer = box
    request = get(signer.path(KEY))
    warm = Client(handle.port)
    assert status(warm.exchange(request)) == 200  # read from disk into memory: not a plain hit yet
    warm.close()
    on_loop(handle, lambda: (handle.server.record_hits(), handle.server.access_log.sync(5),
                             handle.server.stats.take(0)))
    log_path = handle.config.log.access_log
    open(log_path, "w").close()
    asked = handled(handle)
    client = Client(handle.port)
    normal = client.exchange(request)  # a plain hit from memory through the parser and the handler
    replayed = [client.exchange(request) for _ in range(3)]  # the same bytes: the memo
    assert len(asked) == 1, asked
    assert normal.endswith(BODY) and b"\r\nDate: " in normal
    for answer in replayed:
        assert b"\r\nDate: " in answer and b"Connection: close" not in answer
        assert without_date(answer) == without_date(normal)
    client.close()

    report = on_loop(handle, lambda: (handle.server.record_hits(), handle.server.stats.take(0))[1])
    assert report.requests == [(200, "hit", 4)]
    assert report.bytes_sent == [("memory", "hit", 4 * len(BODY))]
    assert report.hits == {KEY: 4}
    assert sum(report.duration_buckets) == 4
    assert on_loop(handle, lambda: handle.server.access_log.sync(5))
    with open(log_path, encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    assert len(lines) == 4
    for line in lines:
        assert line.pop("ts") > 0 and line.pop("ms") >= 0
    assert lines[0] == {"client": "127.0.0.1", "method": "GET", "target": "/" + KEY, "key": KEY, "status": 200,
                        "bytes": len(BODY), "cache": "hit", "tier": "memory"}
    assert lines[1:] == [lines[0]] * 3  # the replayed lines carry the same fields as the normal path's


def test_a_replace_and_a_purge_between_two_identical_requests_are_seen(box: Any) -> None:
    handle, signer = box
    request = get(signer.path(KEY))
    client = Client(handle.port)
    for _ in range(3):
        assert client.exchange(request).endswith(BODY)
    assert request in handle.server.handler.memo._plans
    replacement = os.urandom(4000)
    source = os.path.join(os.path.dirname(handle.config.log.access_log), "replacement")
    with open(source, "wb") as fh:
        fh.write(replacement)
    with Store.open(handle.config.storage) as store:
        store.put_file(source, KEY)  # replaced: the store's generation moves
        answer = client.exchange(request)
        assert answer.endswith(replacement) and b"Content-Length: 4000\r\n" in answer
        assert client.exchange(request).endswith(replacement)  # and the memo now holds the new object
        assert store.evict(KEY)  # purged
        assert status(client.exchange(request)) == 404
        assert status(client.exchange(request)) == 404
    client.close()


def test_an_expired_token_grant_is_refused_on_the_next_identical_request(box: Any) -> None:
    handle, signer = box
    issued = time.time()
    token = mint(signer.key, "bench-1", issuer="bench", scope=title_scope("7"), lifetime=1, now=issued)
    request = get(token_path(token, KEY))
    asked = handled(handle)
    client = Client(handle.port)
    assert status(client.exchange(request)) == 200  # from disk, then...
    assert status(client.exchange(request)) == 200  # ...a plain hit, remembered with the grant's expiry
    replays = 0
    deadline = issued + 5
    while time.time() < deadline:  # bounded: the token is good for one second
        answer = client.exchange(request)
        if status(answer) != 200:
            break
        replays += 1
        time.sleep(0.05)
    assert status(answer) == 403 and b"X-OCA-Reason: token expired" in answer, answer[:300]
    assert replays > 0 and len(asked) == 3  # the replays never asked the handler; the refusal did
    assert status(client.exchange(request)) == 403
    client.close()


@pytest.mark.parametrize("variant", ["range", "if-none-match", "if-modified-since", "head", "close",
                                     "pipelined", "split", "cmcd"])
def test_other_request_shapes_after_a_remembered_hit_take_the_normal_path(box: Any, variant: str) -> None:
    handle, signer = box
    path = signer.path(KEY)
    plain = get(path)
    client = Client(handle.port)
    for _ in range(3):
        first = client.exchange(plain)
    assert plain in handle.server.handler.memo._plans
    etag = re.search(rb"\r\nETag: ([^\r]*)", first)[1]  # type: ignore[index]
    modified = re.search(rb"\r\nLast-Modified: ([^\r]*)", first)[1]  # type: ignore[index]
    if variant == "range":
        answer = client.exchange(get(path, b"Range: bytes=10-19"))
        assert status(answer) == 206 and answer.endswith(BODY[10:20])
        assert b"Content-Range: bytes 10-19/8192\r\n" in answer
    elif variant == "if-none-match":
        answer = client.exchange(get(path, b"If-None-Match: " + etag), head_only=True)
        assert status(answer) == 304 and b"\r\nContent-Length:" not in answer and b"ETag: " + etag in answer
    elif variant == "if-modified-since":
        answer = client.exchange(get(path, b"If-Modified-Since: " + modified), head_only=True)
        assert status(answer) == 304
    elif variant == "head":
        answer = client.exchange(get(path, method=b"HEAD"), head_only=True)
        assert status(answer) == 200 and b"Content-Length: 8192\r\n" in answer
        assert client.exchange(plain).endswith(BODY)  # no body was sent after HEAD's head
    elif variant == "close":
        answer = client.exchange(get(path, b"Connection: close"))
        assert status(answer) == 200 and b"Connection: close\r\n" in answer and answer.endswith(BODY)
        assert client.closed()
    elif variant == "pipelined":
        client.send(plain + plain)  # two heads in one read: each answered, in order, by the normal path
        assert without_date(client.response()) == without_date(first)
        assert without_date(client.response()) == without_date(first)
    elif variant == "split":
        client.send(plain[:20])
        time.sleep(0.05)
        answer = client.exchange(plain[20:])  # the rest of the head in a second read
        assert without_date(answer) == without_date(first)
    else:
        answer = client.exchange(get(path + "?CMCD=ot%3Dv"))
        assert status(answer) == 200 and answer.endswith(BODY)
    client.close()
    assert len(handle.server.handler.memo) == 1  # none of the other shapes was remembered


class TickingDates:
    """A DateCache whose second moves on every call: each hit of a box whose objects are asked for less than
    once a second."""

    def __init__(self) -> None:
        self.second = 0
        self._values: dict[int, bytes] = {}

    def now(self) -> bytes:
        self.second += 1  # one value per second, as DateCache returns
        return self._values.setdefault(self.second, b"Thu, 03 Dec 2026 23:00:%02d GMT" % (self.second % 60))


def test_a_hit_head_is_not_rebuilt_per_object_when_the_second_moves(cache: Any, monkeypatch: Any) -> None:
    from oca.serve.handler import ContentHandler

    objects, _, loaded = cache
    handler = ContentHandler(objects, HttpConfig(), cast(Any, None))
    dates = TickingDates()
    monkeypatch.setattr(handler, "_dates", dates)
    built: list[int] = []
    real_head = handler._head
    monkeypatch.setattr(handler, "_head", lambda *args: built.append(1) or real_head(*args))
    entries = [loaded("t/a"), loaded("t/b")]
    heads = [handler.hit_head(entry, 100) for _ in range(3) for entry in entries]
    assert not built  # before: the whole head built again by _head for each object in each new second (6 here)
    for second, head in enumerate(heads, start=1):
        assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: Thu, 03 Dec 2026 23:00:%02d GMT\r\nServer: oca/" % second)
        assert head.endswith(b"Cache-Status: oca; hit; detail=ssd\r\nContent-Length: 100\r\n\r\n")
    dates.second = 9  # the same second twice: the object's head is kept
    head = handler.hit_head(entries[0], 100)
    dates.second = 9
    assert handler.hit_head(entries[0], 100) is head

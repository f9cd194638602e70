"""The access log: one JSON object per line, per request, written whole lines at a time.

Rules kept here:
- The hit path only appends a tuple (`add`); plain hits from memory, whose fields but time, client and
  duration never change and come preformatted from `fast_fields`, arrive in lists (`add_hits`: the server
  batches them). Lines are formatted in batches when the log flushes (every 512 lines and on each
  one-second sweep).
- Several workers append to one file: each flush is a single write() of complete lines on an O_APPEND
  descriptor, so lines from different workers never interleave.
- The write() itself happens on a thread of the log's own, in the order the flushes came: a write to a
  file can sleep for milliseconds (the inode lock another worker holds for its append, dirty-page
  throttling, the journal; measured 2-15 ms under the benchmark's load), and on the event loop that sleep
  would hold every connection of the worker. Formatting stays on the loop (it needs the interpreter anyway).
- A full, failing or stalled log disk never stops the box from serving: past MAX_QUEUED bytes waiting for
  the disk, further lines are dropped and counted (`dropped`), not held.

Fields: ts (epoch seconds, ms precision), client, method, target (as sent, at most 512 bytes), key,
status, bytes (body bytes sent), ms (from the request's last byte to the response's last byte), cache
(hit, miss or empty), tier (the tier or "memory" the body came from), then any extras (range, cmcd,
error, aborted).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from json.encoder import encode_basestring_ascii as _js
from typing import Any

from oca.serve.messages import HitCounted

log = logging.getLogger("oca.serve")
_FLUSH_AT = 512
MAX_QUEUED = 16 << 20  # bytes of formatted lines waiting for the disk before new ones are dropped
# Only the method, the target and the extras can hold characters JSON must escape: keys, client
# addresses, tier names and cache results are drawn from alphabets that cannot.
_LINE = '{"ts":%.3f,"client":"%s","method":%s,"target":%s,"key":"%s","status":%d,"bytes":%d,"ms":%.3f,' \
        '"cache":"%s","tier":"%s"%s}\n'

# a plain hit's line (_hit_lines): the time and the duration come as integers of ms and µs (formatting a
# float of epoch seconds costs more than the rest of the line), the time formatted once per millisecond
_FRACTIONS = [f"{n:03d}" for n in range(1000)]

Record = tuple[float, str, str, bytes, str, int, int, float, str, str, "dict[str, Any] | None"]
# a plain hit from memory: its entry (counted on), body bytes, seconds, client, fast_fields(...), when it ended
# (perf_counter)
Hit = tuple[HitCounted, int, float, str, str, float]


def fast_fields(method: str, target: bytes, key: str, status: int, sent: int) -> str:
    """The middle of a line that only time, client and duration change: computed once per object."""
    target_text = _js(target[:512].decode("latin-1"))
    return f'"method":{_js(method)},"target":{target_text},"key":"{key}","status":{status},"bytes":{sent},'


class AccessLog:
    def __init__(self, destination: str | None) -> None:
        self._fd: int | None
        if destination is None:
            self._fd = None
        elif destination == "-":
            self._fd = 1
        else:
            self._fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._records: list[Record | tuple[float, list[Hit]]] = []
        self._lines = 0  # lines the records hold
        self._writer = _Writer(self._fd) if self._fd is not None else None
        self.disabled = self._fd is None  # read once per request: a plain attribute

    @property
    def dropped(self) -> int:
        """Lines dropped because the disk took more than MAX_QUEUED bytes behind."""
        return self._writer.dropped if self._writer is not None else 0

    def add(self, record: Record) -> None:
        """(ts, client, method, target, key, status, bytes, seconds, cache, tier, extras or None)"""
        self._records.append(record)
        self._lines += 1
        if self._lines >= _FLUSH_AT:
            self.flush()

    def add_hits(self, epoch: float, hits: list[Hit]) -> None:
        """Plain hits from memory; `epoch` turns their end times (perf_counter) into epoch seconds."""
        self._records.append((epoch, hits))
        self._lines += len(hits)
        if self._lines >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Format what was added and hand it to the writer thread (it is on disk soon, not on return)."""
        if self._writer is None or not self._records:
            return
        records, self._records, lines, self._lines = self._records, [], self._lines, 0
        text = "".join([_hit_lines(*r) if len(r) == 2 else _format(r) for r in records])
        self._writer.put(text.encode("utf-8", "replace"), lines)

    def written(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until the lines already flushed are written; False if they are not."""
        return self._writer is None or self._writer.wait(timeout)

    def sync(self, timeout: float) -> bool:
        """Flush, then wait as `written` does."""
        self.flush()
        return self.written(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is left (waiting up to `timeout` seconds for the disk) and close the file."""
        self.flush()
        writer, self._writer = self._writer, None
        # a writer still stuck in write() keeps the descriptor: closing it under the write would let a later
        # open() reuse the number and take the lines
        if writer is not None and writer.stop(timeout) and self._fd is not None and self._fd > 2:
            os.close(self._fd)
        self._fd = None
        self.disabled = True


class _Writer:
    """One thread that writes the chunks it is given to `fd`, in order, whole (a short write is continued)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: deque[bytes] = deque()
        self._pending = 0  # bytes handed over and not yet written (queued or being written)
        self._stopping = False
        self._cond = threading.Condition(threading.Lock())
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="oca-access-log", daemon=True)
        self._thread.start()

    def put(self, data: bytes, lines: int) -> None:
        with self._cond:
            if self._pending + len(data) > MAX_QUEUED:
                if not self.dropped:
                    log.warning("access log: the disk is %d bytes behind; dropping lines until it catches up",
                                self._pending)
                self.dropped += lines
                return
            self._chunks.append(data)
            self._pending += len(data)
            self._cond.notify_all()  # the thread, not only a sync() that waits on the same condition

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float) -> bool:
        """Let the thread write what is queued and end; True once it has (within `timeout` seconds)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                cond.wait_for(lambda: self._chunks or self._stopping)
                if not self._chunks:
                    return
                data = self._chunks.popleft()
            size = len(data)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:
                pass  # a full or failing log disk never stops the box (its lines are lost, not retried)
            with cond:
                self._pending -= size
                cond.notify_all()


def _hit_lines(epoch: float, hits: list[Hit]) -> str:
    # one f-string per line, the three-digit fractions looked up: about 0.6 µs a line where a %-format of a
    # 5-tuple took 1.0
    lines = []
    last_ms, stamp = -1, ""
    fraction = _FRACTIONS
    for _, _, seconds, client, fields, ended in hits:
        ms = round((epoch + ended) * 1000)
        if ms != last_ms:
            last_ms, stamp = ms, f"{ms // 1000}.{fraction[ms % 1000]}"
        us = round(seconds * 1e6)
        lines.append(f'{{"ts":{stamp},"client":"{client}",{fields}"ms":{us // 1000}.{fraction[us % 1000]},'
                     '"cache":"hit","tier":"memory"}\n')
    return "".join(lines)


def _format(record: Record) -> str:
    ts, client, method, target, key, status, sent, seconds, cache, tier, extras = record
    more = "," + json.dumps(extras, separators=(",", ":"), default=str)[1:-1] if extras else ""
    return _LINE % (ts, client, _js(method), _js(target[:512].decode("latin-1")), key, status, sent, seconds * 1000,
                    cache, tier, more)

"""The access log: one JSON object per line, per request, written whole lines at a time.

Rules kept here:
- The hit path only appends a tuple (`add`); plain hits from memory, whose fields but time, client and
  duration never change and come preformatted from `fast_fields`, arrive in lists (`add_hits`: the server
  batches them). Lines are formatted in batches when the log flushes (every 512 lines and on each
  one-second sweep).
- Several workers append to one file: each flush is a single write() of complete lines on an O_APPEND
  descriptor, so lines from different workers never interleave.
- A full or failing log disk never stops the box from serving.

Fields: ts (epoch seconds, ms precision), client, method, target (as sent, at most 512 bytes), key,
status, bytes (body bytes sent), ms (from the request's last byte to the response's last byte), cache
(hit, miss or empty), tier (the tier or "memory" the body came from), then any extras (range, cmcd,
error, aborted).
"""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring_ascii as _js
from typing import Any

_FLUSH_AT = 512
# Only the method, the target and the extras can hold characters JSON must escape: keys, client
# addresses, tier names and cache results are drawn from alphabets that cannot.
_LINE = '{"ts":%.3f,"client":"%s","method":%s,"target":%s,"key":"%s","status":%d,"bytes":%d,"ms":%.3f,' \
        '"cache":"%s","tier":"%s"%s}\n'

# a plain hit's line: the time and the duration come as integers of ms and µs (formatting a float of epoch
# seconds costs more than the rest of the line), the time formatted once per millisecond
_HIT_LINE = '{"ts":%s,"client":"%s",%s"ms":%d.%03d,"cache":"hit","tier":"memory"}\n'

Record = tuple[float, str, str, bytes, str, int, int, float, str, str, "dict[str, Any] | None"]
# a plain hit from memory: key, body bytes, seconds, client, fast_fields(...), when it ended (perf_counter)
Hit = tuple[str, int, float, str, str, float]


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
        self.disabled = self._fd is None  # read once per request: a plain attribute

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
        if self._fd is None or not self._records:
            return
        records, self._records, self._lines = self._records, [], 0
        text = "".join([_hit_lines(*r) if len(r) == 2 else _format(r) for r in records])
        data = text.encode("utf-8", "replace")
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            pass

    def close(self) -> None:
        self.flush()
        if self._fd is not None and self._fd > 2:
            os.close(self._fd)
        self._fd = None
        self.disabled = True


def _hit_lines(epoch: float, hits: list[Hit]) -> str:
    lines = []
    last_ms, stamp = -1, ""
    for _, _, seconds, client, fields, ended in hits:
        ms = round((epoch + ended) * 1000)
        if ms != last_ms:
            last_ms, stamp = ms, f"{ms // 1000}.{ms % 1000:03d}"
        us = round(seconds * 1e6)
        lines.append(_HIT_LINE % (stamp, client, fields, us // 1000, us % 1000))
    return "".join(lines)


def _format(record: Record) -> str:
    ts, client, method, target, key, status, sent, seconds, cache, tier, extras = record
    more = "," + json.dumps(extras, separators=(",", ":"), default=str)[1:-1] if extras else ""
    return _LINE % (ts, client, _js(method), _js(target[:512].decode("latin-1")), key, status, sent, seconds * 1000,
                    cache, tier, more)

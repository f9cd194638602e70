"""What a worker's connection hands the handler and gets back: a parsed request and a planned response.

A response body is a list of parts: bytes to send as they are, or a FileSlice to send from a file with
os.sendfile. Only the connection code turns parts into syscalls.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ObjectTruncated(Exception):
    """An object's file holds fewer bytes than the index says: the object is damaged, not the tier."""


@dataclass(slots=True)
class Request:
    method: str
    target: bytes
    headers: dict[str, str]
    keep_alive: bool
    client: str
    started: float  # time.perf_counter() when the request's last byte arrived
    failure: tuple[int, str] | None = None  # set when the request could not be parsed: (status, reason)


@dataclass(frozen=True, slots=True)
class FileSlice:
    """`length` bytes from `offset` of the open file `fd`; the connection closes fd when the response ends."""

    fd: int
    offset: int
    length: int


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # status line and headers, ending with the blank line
    parts: list[bytes | FileSlice] = field(default_factory=list)
    body_length: int = 0  # bytes the parts carry (0 for HEAD and bodiless statuses)
    close: bool = False  # close the connection after this response
    key: str = ""
    tier: str = ""  # the tier (or "memory") the body came from; "" when no body
    cache: str = ""  # hit, miss, or "" for non-content answers
    owned_fds: tuple[int, ...] = ()  # file descriptors to close after the last part went out
    log: dict[str, object] | None = None  # extra fields for the access log (range, cmcd, error)
    log_fields: str = ""  # set on plain hits from memory: the access log's preformatted fixed fields

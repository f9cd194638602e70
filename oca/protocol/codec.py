"""Messages to bytes and back: one JSON object per line, in the version the two sides agreed on.

Rules kept here:
- This is the only place a master-worker message becomes bytes or is read from them (msgspec's JSON codec,
  which checks every field against its record while it parses: no dict is handed on unread).
- The handshake (`Hello`, then `Welcome` or `Refused`) has one shape in every version: it is how two
  releases learn which version to use, so it cannot depend on one.
- Version 1 (releases before the handshake) differs only on the control socket: the master sent the bare
  config as its first line, and the worker sent `{"ready": true}` and untagged reports. Its fill link is
  the one versions 2 and later use, less the kinds added since (`SINCE`: a worker's `PrefetchHint`), which a
  codec of version 1 neither encodes nor decodes. A version that changes a message adds its old shape here,
  decoded into the current record, so the master keeps reading the release before it.
- Decoding never raises anything but ProtocolError; a caller logs it and skips the line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from oca.errors import OcaError
from oca.protocol.messages import (
    ControlMessage,
    FillAsk,
    FillEvent,
    Hello,
    MasterMessage,
    PrefetchHint,
    Ready,
    Refused,
    Report,
    Welcome,
    WorkerMessage,
)
from oca.protocol.version import LEGACY, VERSION, negotiate, speaks

SPEAKS = speaks(VERSION)  # what this code speaks, newest first

_encoder = msgspec.json.Encoder()
_worker_messages = msgspec.json.Decoder(WorkerMessage)
_master_messages = msgspec.json.Decoder(MasterMessage)
_control_messages = msgspec.json.Decoder(ControlMessage)
_asks = msgspec.json.Decoder(FillAsk)
_events = msgspec.json.Decoder(FillEvent)
_hello = msgspec.json.Decoder(Hello)
_legacy_report = msgspec.json.Decoder(Report)  # untagged: version 1's reports carry no "t"
_config = msgspec.json.Decoder(dict[str, Any])

# message kinds that a version before this one does not have: kind -> the first version that carries it
# (the handshake's kinds and the control socket's Duress, which version 1 never reads, are not listed)
SINCE: dict[type[msgspec.Struct], int] = {PrefetchHint: 2}


class ProtocolError(OcaError):
    """A line that is not a message of the agreed version (or a peer that speaks no version we do)."""


def _decode(decoder: msgspec.json.Decoder[Any], line: bytes, what: str) -> Any:
    try:
        return decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"unreadable {what}: {exc}: {line[:100]!r}") from None


class Codec:
    """Encoding and decoding in one agreed version (one of SPEAKS)."""

    __slots__ = ("version",)

    def __init__(self, version: int) -> None:
        if version not in SPEAKS:
            raise ProtocolError(f"protocol version {version} is not one this release speaks {list(SPEAKS)}")
        self.version = version

    def carries(self, kind: type[msgspec.Struct]) -> bool:
        """Whether a message of this kind exists in this codec's version (a sender checks before it sends
        one that is optional, such as a PrefetchHint)."""
        return SINCE.get(kind, LEGACY) <= self.version

    def encode(self, message: msgspec.Struct) -> bytes:
        if not self.carries(type(message)):
            raise ProtocolError(f"{type(message).__name__} is not a message of protocol version {self.version}")
        return _encoder.encode(message) + b"\n"

    def encode_config(self, config: dict[str, Any]) -> bytes:
        """A version-1 worker's first line: the bare config (later versions get it in Welcome)."""
        return _encoder.encode(config) + b"\n"

    def worker_message(self, line: bytes) -> WorkerMessage:
        if self.version == LEGACY:
            if line.startswith(b'{"ready"'):
                return Ready()
            return _decode(_legacy_report, line, "report")  # type: ignore[no-any-return]
        return _decode(_worker_messages, line, "worker message")  # type: ignore[no-any-return]

    def control_message(self, line: bytes) -> ControlMessage:
        """What the master sends on the control socket after the handshake (versions 2 and later)."""
        return _decode(_control_messages, line, "control message")  # type: ignore[no-any-return]

    def ask(self, line: bytes) -> FillAsk:
        message: FillAsk = _decode(_asks, line, "fill request")
        if not self.carries(type(message)):
            raise ProtocolError(f"unreadable fill request: {type(message).__name__} is not a message of protocol "
                                f"version {self.version}: {line[:100]!r}")
        return message

    def event(self, line: bytes) -> FillEvent:
        return _decode(_events, line, "fill event")  # type: ignore[no-any-return]


# -- the handshake --------------------------------------------------------------------------------------


def hello() -> bytes:
    """A worker's first line."""
    return _encoder.encode(Hello(SPEAKS)) + b"\n"


def read_hello(line: bytes) -> Hello:
    return _decode(_hello, line, "hello")  # type: ignore[no-any-return]


def answer(hello: Hello, config: dict[str, Any]) -> Welcome | Refused:
    """The master's answer to a worker's Hello: the version both speak, or why there is none."""
    version = negotiate(SPEAKS, hello.speaks)
    if version is None:
        return Refused(f"the worker speaks protocol versions {list(hello.speaks)}, this master speaks "
                       f"{list(SPEAKS)}: no version in common", SPEAKS)
    return Welcome(version, config)


def encode_answer(message: Welcome | Refused) -> bytes:
    return _encoder.encode(message) + b"\n"


def read_answer(line: bytes) -> Welcome:
    """The master's answer to our Hello: Welcome, or ProtocolError saying why the master refused us."""
    message = _decode(_master_messages, line, "answer to hello")
    if isinstance(message, Refused):
        raise ProtocolError(f"the master refused this worker: {message.reason}")
    if message.version not in SPEAKS:
        raise ProtocolError(f"the master chose protocol version {message.version}, which this worker does not "
                            f"speak {list(SPEAKS)}")
    return message  # type: ignore[no-any-return]


def read_config(line: bytes) -> dict[str, Any]:
    return _decode(_config, line, "config")  # type: ignore[no-any-return]


# -- line framing and dispatch --------------------------------------------------------------------------


class Lines:
    """Bytes in, complete lines out (without their newline); a partial line waits for the rest."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            lines.append(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        return lines


M = TypeVar("M")


class Dispatch(Generic[M]):
    """Message type -> handler, from a table (h11's way: the cases are data, not an if-chain). Extra
    arguments (e.g. the link a message came on) are passed on after the message."""

    __slots__ = ("_handlers",)

    def __init__(self, handlers: Mapping[type[Any], Callable[..., None]]) -> None:
        self._handlers = dict(handlers)

    def __call__(self, message: M, *context: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"no handler for {type(message).__name__}")
        handler(message, *context)

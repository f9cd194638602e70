"""Which protocol versions a release speaks, read from its slot before any of its workers starts.

Rules kept here:
- The release's code is not imported or run (its workers are the first of it to run): its copy of
  oca/protocol/version.py is parsed and its `VERSION = <int>` literal read; the rule of
  oca.protocol.version (V speaks V and V-1) gives the rest.
- A slot with no such file but with a worker (oca/serve/worker.py) is a release from before the protocol
  was versioned: it speaks version 1 only. Anything else is a ProtocolError naming the file.
- The handshake checks again at run time: this reading only lets the master refuse a release before it
  stops anything.
"""

from __future__ import annotations

import ast
import os

from oca.protocol.codec import SPEAKS, ProtocolError
from oca.protocol.version import LEGACY, negotiate, speaks

VERSION_FILE = os.path.join("oca", "protocol", "version.py")


def protocol_of(slot: str) -> int:
    """The protocol version of the release unpacked at `slot`."""
    path = os.path.join(slot, VERSION_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
    except FileNotFoundError:
        if os.path.isfile(os.path.join(slot, "oca", "serve", "worker.py")):
            return LEGACY
        raise ProtocolError(f"{slot} holds neither {VERSION_FILE} nor a worker: not a release") from None
    except OSError as exc:
        raise ProtocolError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        tree = ast.parse(source, path)
    except SyntaxError as exc:
        raise ProtocolError(f"{path} is not Python: {exc.msg} (line {exc.lineno})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["VERSION"] \
                and isinstance(node.value, ast.Constant) and type(node.value.value) is int:
            return node.value.value
    raise ProtocolError(f"{path} has no `VERSION = <integer>` line")


def check_release(slot: str | None, name: str) -> int:
    """The version the master will talk to release `name` (at `slot`; None: the master's own code) in;
    ProtocolError, saying which versions each side speaks, when there is none."""
    if slot is None:
        return SPEAKS[0]
    theirs = speaks(protocol_of(slot))
    version = negotiate(SPEAKS, theirs)
    if version is None:
        raise ProtocolError(f"release {name} speaks master-worker protocol versions {list(theirs)}; this master "
                            f"speaks {list(SPEAKS)}: switch through a release in between, or upgrade the "
                            "installed oca first")
    return version

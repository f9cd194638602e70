"""Free loopback ports for the servers a test or a benchmark starts.

The kernel picks an ephemeral port for `bind(("127.0.0.1", 0))` and, once that probe socket is closed, may
pick the same one for the next probe: two ports asked for one config (a box's data and admin listeners)
then collide, and the box refuses its config ("admin.listen ... is server.listen too"). So every port handed
out in this process is remembered and never handed out again while it is among the last `REMEMBERED`.
"""

from __future__ import annotations

import collections
import socket
import threading

REMEMBERED = 4096  # a few thousand ports per suite run; the ephemeral range holds ~28,000

_handed: collections.OrderedDict[int, None] = collections.OrderedDict()
_lock = threading.Lock()


def _probe() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A loopback port nothing listens on now and that this process has not handed out recently."""
    with _lock:
        for _ in range(64):
            port = _probe()
            if port not in _handed:
                _handed[port] = None
                if len(_handed) > REMEMBERED:
                    _handed.popitem(last=False)
                return port
        raise OSError("no free loopback port that was not handed out already (64 probes)")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports."""
    return [free_port() for _ in range(count)]

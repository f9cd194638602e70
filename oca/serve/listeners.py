"""Listening sockets for the data port: one SO_REUSEPORT socket per worker slot, owned by the master.

The master keeps them open for its whole life, so a worker that dies and is restarted, or a new
generation of workers after SIGHUP, takes over the same socket and its backlog: no connection is refused
while workers change.
"""

from __future__ import annotations

import socket


def bind_listeners(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    listeners: list[socket.socket] = []
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: every slot shares the port the first one got
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners

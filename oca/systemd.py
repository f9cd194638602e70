"""systemd's notify protocol (sd_notify(3)): READY, STOPPING, RELOADING, WATCHDOG, STATUS.

Written out here because it is one datagram to the socket systemd names in NOTIFY_SOCKET; without that
variable (not under systemd) every call is a no-op. Both daemons use it (the box's master, `oca serve`, and
the control plane, `oca control serve`), so it sits at the bottom of the tree and imports nothing of theirs.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000

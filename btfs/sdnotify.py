"""systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

It is a documented, stable protocol of a few lines, so we speak it directly rather than
depend on a library: `READY=1` once a service is usable, `STOPPING=1` on shutdown.
Without NOTIFY_SOCKET (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send `KEY=VALUE` lines; True if a notification socket was there and took them."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError:
        return False
    return True

"""sd_notify: READY, WATCHDOG, STOPPING and STATUS datagrams to systemd (a no-op elsewhere)."""

from __future__ import annotations

import socket


class Notifier:
    """Sends sd_notify messages to `address` (systemd's NOTIFY_SOCKET), if there is one."""

    def __init__(self, address: str | None) -> None:
        self._address = address

    @property
    def enabled(self) -> bool:
        """True when running under a systemd unit of Type=notify."""
        return bool(self._address)

    def notify(self, **fields: str | int) -> None:
        """Send `KEY=value` lines, e.g. `notify(READY=1, STATUS="leader")`."""
        if not self._address:
            return
        address = self._address
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)

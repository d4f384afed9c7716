"""The sd_notify protocol, by hand: tell systemd we are ready, what we are doing, that
we are alive (watchdog), and that we are stopping or reloading.

Protocol (sd_notify(3)): one AF_UNIX datagram per message to the socket named by
``$NOTIFY_SOCKET``, newline-separated ``KEY=VALUE`` assignments. A leading ``@`` names
a socket in the abstract namespace (the ``@`` becomes a NUL byte).

Outside systemd (``NOTIFY_SOCKET`` unset) every call does nothing: running in a
terminal is an ordinary configuration, not a failure. Inside systemd a message that
cannot be delivered raises ``SdNotifyError``: a supervisor that silently stopped
feeding the watchdog would be killed without anyone knowing why.

The unit uses ``NotifyAccess=main``: only the supervisor may notify. ``from_environment``
therefore removes the variables from ``os.environ`` (by default) so that workers and
PostgreSQL, which inherit the environment, do not even see them; and a notifier used
in another process than the one that created it raises.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

__all__ = ["SdNotifyError", "SystemdNotifier"]

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SdNotifyError(OSError):
    """A notification could not be delivered to systemd."""


class SystemdNotifier:
    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        if socket_path is not None and not socket_path.startswith(("/", "@")):
            raise ValueError(
                f"unsupported NOTIFY_SOCKET {socket_path!r}: expected an absolute path "
                "or an abstract socket name starting with '@'"
            )
        self._address = None if socket_path is None else _address(socket_path)
        self._socket_path = socket_path
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._pid = os.getpid()
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> SystemdNotifier:
        """Read ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` and, with ``unset``,
        remove them so child processes do not inherit them."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        values: Mapping[str, str] = {k: env[k] for k in _ENV_KEYS if k in env}
        if unset:
            for key in _ENV_KEYS:
                env.pop(key, None)
        return cls(
            values.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_positive_int(values, "WATCHDOG_USEC"),
            watchdog_pid=_positive_int(values, "WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None when the watchdog is off for this
        process. Ping at least twice per interval (systemd recommends every half)."""
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 1_000_000

    # -- messages -------------------------------------------------------------

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` assignments in one datagram; returns False when not under
        systemd. Keys are upper-cased: ``notify(status="x")`` sends ``STATUS=x``."""
        if not fields:
            raise ValueError("notify() needs at least one field")
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:
                raise ValueError(f"sd_notify field {key.upper()} must be a single line")
            lines.append(f"{key.upper()}={text}")
        return self._send("\n".join(lines))

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) finished: systemd marks the unit active."""
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        """Free-form status shown by ``systemctl status``."""
        return self.notify(status=text)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def stopping(self, status: str | None = None) -> bool:
        if status is None:
            return self.notify(stopping=1)
        return self.notify(stopping=1, status=status)

    def reloading(self) -> bool:
        """Reload started; send ``ready()`` when it is done. MONOTONIC_USEC lets newer
        systemd versions (Type=notify-reload) match the reload; older ones ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(reloading=1, monotonic_usec=usec)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- transport --------------------------------------------------------------

    def _send(self, message: str) -> bool:
        if self._address is None:
            return False
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"SystemdNotifier created in process {self._pid} used in process "
                f"{os.getpid()}: only the main process may notify (NotifyAccess=main)"
            )
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            raise SdNotifyError(
                exc.errno, f"sd_notify to {self._socket_path!r} failed: {exc.strerror}"
            ) from exc
        return True


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def _positive_int(values: Mapping[str, str], key: str) -> int | None:
    raw = values.get(key)
    if raw is None or raw == "":
        return None
    try:
        number = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not an integer") from None
    if number <= 0:
        raise ValueError(f"{key}={raw!r} must be positive")
    return number

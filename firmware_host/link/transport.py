"""Where the link's bytes go: a small transport interface, a serial port, and an in-memory line.

A transport moves bytes and nothing else: ``write``, ``read(n, timeout)``, ``close`` and
``reopen``. Every failure of the port underneath (pyserial's ``SerialException``, an ``OSError``
from a vanished device node) leaves it as a ``PortError`` that names the port and says what to
check, so a caller handles one exception type, and the device agent and the host driver can
reopen the same path when a cable comes back.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import LinkError


class PortError(LinkError):
    """The port could not be opened, or failed under a read or write (it vanished, a cable was pulled)."""


class Transport:
    """The interface the host driver and the device agent use. ``name`` is for messages."""

    name = "transport"

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the line (PortError if the port is gone)."""
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes: returns as soon as any are there, or ``b""`` after ``timeout`` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the port; never raises."""
        raise NotImplementedError

    def wake(self) -> None:
        """Make a ``read`` waiting in another thread return now (with what it has, maybe nothing).
        Called from any thread; never raises."""

    def reopen(self) -> None:
        """Close, then open the same port again (PortError if it is not there)."""
        raise NotImplementedError


class SerialTransport(Transport):
    """A pyserial port, imported lazily (the protocol and the session never need it)."""

    def __init__(self, port: str, baud: int = 115200, *, open_now: bool = True, write_timeout: float = 10.0):
        self.name = port
        self.baud = baud
        self.write_timeout = write_timeout
        self._serial = None
        self._timeout: float | None = None
        if open_now:
            self.reopen()

    def reopen(self) -> None:
        self.close()
        import serial

        try:
            self._serial = serial.Serial(self.name, baudrate=self.baud, timeout=0, write_timeout=self.write_timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"{self.name}: cannot open the serial port ({_reason(exc)}); check the path "
                            "(ls /dev/serial/by-id), that the adapter is plugged in, and that this user may "
                            "use it (group dialout)") from None
        self._timeout = 0

    def write(self, data: bytes) -> None:
        try:
            self._port().write(data)
        except OSError as exc:              # SerialException and SerialTimeoutException are OSErrors
            raise self._lost("write", exc) from None

    def read(self, n: int, timeout: float) -> bytes:
        port = self._port()
        try:
            waiting = port.in_waiting
            if not waiting:
                if timeout != self._timeout:
                    port.timeout = self._timeout = timeout
                first = port.read(1)        # blocks until a byte arrives or the timeout passes
                if not first or n == 1:
                    return first
                waiting = port.in_waiting
                return first + (port.read(min(n - 1, waiting)) if waiting else b"")
            return port.read(min(n, waiting))
        except OSError as exc:
            raise self._lost("read", exc) from None

    def wake(self) -> None:
        port = self._serial
        if port is not None and hasattr(port, "cancel_read"):     # pyserial's POSIX port: a pipe it selects on
            try:
                port.cancel_read()
            except OSError:
                pass

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except OSError:                 # closing a port that vanished must not mask the real error
                pass

    def _port(self):
        if self._serial is None:
            raise PortError(f"{self.name}: the serial port is closed")
        return self._serial

    def _lost(self, what: str, exc: OSError) -> PortError:
        return PortError(f"{self.name}: {what} failed ({_reason(exc)}); the port vanished: was the cable or "
                         "the USB adapter pulled?")


def _reason(exc: OSError | ValueError) -> str:
    """What went wrong, without pyserial's repetitions: "No such file or directory". pyserial
    raises its SerialException while handling the OSError that carries the errno."""
    errno = getattr(exc, "errno", None) or getattr(exc.__context__, "errno", None)
    return os.strerror(errno) if errno else str(exc) or type(exc).__name__


class Loopback(Transport):
    """One end of an in-memory serial line (make both with ``loopback_pair``), for tests.

    ``unplug()`` makes this end vanish as a pulled USB adapter does: reads and writes raise
    PortError, bytes in flight both ways are lost, and ``reopen`` fails until ``plug()``."""

    def __init__(self, name: str, line: "_Line", side: int):
        self.name = name
        self._line = line
        self._side = side
        self.is_open = True
        self.plugged = True
        self._woken = False

    def wake(self) -> None:
        with self._line.changed:
            self._woken = True
            self._line.changed.notify_all()

    def write(self, data: bytes) -> None:
        with self._line.changed:
            self._check()
            peer = self._line.ends[1 - self._side]
            if peer.is_open and peer.plugged:
                self._line.buffers[1 - self._side].extend(data)
                self._line.changed.notify_all()

    def read(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._line.changed:
            buffer = self._line.buffers[self._side]
            while True:
                self._check()
                if buffer:
                    data = bytes(buffer[:n])
                    del buffer[:n]
                    return data
                left = deadline - time.monotonic()
                if left <= 0 or self._woken:
                    self._woken = False
                    return b""
                self._line.changed.wait(left)

    def close(self) -> None:
        with self._line.changed:
            self.is_open = False
            self._line.buffers[self._side].clear()
            self._line.changed.notify_all()

    def reopen(self) -> None:
        with self._line.changed:
            if not self.plugged:
                raise PortError(f"{self.name}: cannot open the serial port (unplugged)")
            self.is_open = True
            self._line.buffers[self._side].clear()

    def unplug(self) -> None:
        with self._line.changed:
            self.plugged = False
            for buffer in self._line.buffers:
                buffer.clear()
            self._line.changed.notify_all()

    def plug(self) -> None:
        with self._line.changed:
            self.plugged = True

    def _check(self) -> None:
        if not self.plugged:
            raise PortError(f"{self.name}: the port vanished (unplugged)")
        if not self.is_open:
            raise PortError(f"{self.name}: the serial port is closed")


class _Line:
    def __init__(self):
        self.changed = threading.Condition()
        self.buffers = (bytearray(), bytearray())
        self.ends: tuple[Loopback, Loopback] = ()


def loopback_pair(names: tuple[str, str] = ("host", "device")) -> tuple[Loopback, Loopback]:
    """Two transports joined back to back: what one writes, the other reads."""
    line = _Line()
    line.ends = (Loopback(names[0], line, 0), Loopback(names[1], line, 1))
    return line.ends

"""One serial port carrying protocol frames: open, send a frame, receive frames.

The only module of the link that touches I/O; ``protocol`` stays pure. Both ends use it:
the device agent on ``/dev/serial0`` (or a USB gadget), the host on its USB-serial adapter,
and the tests on pseudo-terminals.
"""

from __future__ import annotations

import time

from . import protocol
from .errors import LinkError


class Link:
    """A pyserial port plus a protocol decoder, with byte and error counts."""

    def __init__(self, port: str, baud: int = 115200, read_timeout: float = 0.02):
        import serial

        self.port_name = port
        try:
            self.serial = serial.Serial(port, baudrate=baud, timeout=read_timeout, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"{port}: cannot open the serial port ({exc})") from None
        self.decoder = protocol.Decoder()
        self.bytes_out = 0
        self.bytes_in = 0

    def send(self, frame: protocol.Frame) -> int:
        wire = protocol.encode(frame)
        self.serial.write(wire)
        self.bytes_out += len(wire)
        return len(wire)

    def receive(self, timeout: float) -> list[protocol.Frame]:
        """Frames that arrive within ``timeout`` seconds (returns as soon as one whole frame is in)."""
        deadline = time.monotonic() + timeout
        frames: list[protocol.Frame] = []
        while True:
            chunk = self.serial.read(max(1, self.serial.in_waiting))
            if chunk:
                self.bytes_in += len(chunk)
                frames.extend(self.decoder.feed(chunk))
            if frames or time.monotonic() >= deadline:
                return frames

    def reset_input(self) -> None:
        self.serial.reset_input_buffer()

    @property
    def crc_errors(self) -> int:
        return self.decoder.crc_errors

    def close(self) -> None:
        try:
            self.serial.close()
        except Exception:  # closing a port that vanished must not mask the real error
            pass

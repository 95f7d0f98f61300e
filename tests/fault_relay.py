"""A fault-injecting serial relay between two pseudo-terminals, for the link tests and the
throughput benchmark.

``Relay`` opens two pty pairs: the host opens ``host_port``, the device agent ``device_port``;
two threads copy bytes between the masters, one per direction, optionally paced to a baud rate
(10 bits per byte) and damaged on the way: bit flips, dropped bytes, or a cut (everything
discarded for a while), as a UART line and its cable do.

With ``host_link`` (a path), the host opens that symlink instead of the pty itself, as udev
names a USB adapter (``/dev/serial/by-id/...``), and ``unplug()`` makes the host's pty vanish:
both its ends close, so the host's reads and writes fail, and the link is removed. ``replug()``
opens a new pty and points the same link at it, as a re-plugged adapter comes back.

With ``audit=True`` the relay also decodes what passes and keeps ``credit_audit``: the credit
the device granted (its CAPS) and the most DATA bytes it ever saw in flight, that is sent by
the host and not yet answered by a RESULT. The relay sees a RESULT before the host does, so its
figure is a lower bound of the host's own.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
import tty

from pathlib import Path

from firmware_host.link import protocol as p


class Relay:
    def __init__(self, *, baud: int | None = None, flip_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 0,
                 audit: bool = False, host_link: str | Path | None = None):
        self.baud = baud
        self.flip_rate = flip_rate
        self.drop_rate = drop_rate
        self.random = random.Random(seed)
        self.flipped = 0
        self.dropped = 0
        self.forwarded = 0
        self.unplugs = 0
        self.cut = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.credit_audit = {"credit": None, "max_in_flight": 0, "data_frames": 0} if audit else None
        self._in_flight: dict[int, int] = {}      # first sample of an unanswered DATA frame -> its wire bytes
        self.host_link = Path(host_link) if host_link else None
        self.host_master, self._host_slave = _raw_pty()
        self.device_master, self._device_slave = _raw_pty()
        self.device_port = os.ttyname(self._device_slave)
        self.host_port = str(self.host_link) if self.host_link else os.ttyname(self._host_slave)
        if self.host_link:
            self._point_link()
        # The host's master may be swapped by unplug/replug: its pumps look it up on every pass.
        self._threads = [threading.Thread(target=self._pump, args=(lambda: self.host_master,
                                                                   lambda: self.device_master, p.Decoder()),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(lambda: self.device_master,
                                                                   lambda: self.host_master, p.Decoder()),
                                          daemon=True)]

    def __enter__(self) -> "Relay":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for fd in (self.host_master, self.device_master, self._host_slave, self._device_slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.host_link and self.host_link.is_symlink():
            self.host_link.unlink()

    def unplug(self) -> None:
        """The host's adapter is pulled: its pty closes (reads and writes on it fail) and its link goes."""
        assert self.host_link, "unplug needs host_link"
        with self._lock:
            master, slave = self.host_master, self._host_slave
            self.host_master = self._host_slave = None
            self.unplugs += 1
        self.host_link.unlink()
        time.sleep(0.1)             # the pumps stop using the old descriptors before they are closed
        for fd in (master, slave):
            os.close(fd)

    def replug(self) -> None:
        """The adapter is back: a new pty, under the same link."""
        master, slave = _raw_pty()
        with self._lock:
            self.host_master, self._host_slave = master, slave
        self._point_link()

    def _point_link(self) -> None:
        temporary = self.host_link.with_name(self.host_link.name + ".new")
        os.symlink(os.ttyname(self._host_slave), temporary)
        os.replace(temporary, self.host_link)         # appears whole, as udev's link does

    def cut_for(self, seconds: float) -> None:
        """Pull the cable: both directions lose everything for ``seconds``."""
        self.cut.set()
        time.sleep(seconds)
        self.cut.clear()

    def _damage(self, data: bytes) -> bytes:
        if not (self.flip_rate or self.drop_rate):
            return data
        out = bytearray()
        with self._lock:
            for byte in data:
                if self.drop_rate and self.random.random() < self.drop_rate:
                    self.dropped += 1
                    continue
                if self.flip_rate and self.random.random() < self.flip_rate:
                    byte ^= 1 << self.random.randrange(8)
                    self.flipped += 1
                out.append(byte)
        return bytes(out)

    def _audit(self, decoder: p.Decoder, data: bytes) -> None:
        audit = self.credit_audit
        with self._lock:
            for frame in decoder.feed(data):
                if frame.type == p.CAPS:
                    audit["credit"] = p.Caps.unpack(frame.body).credit
                elif frame.type == p.DATA:
                    audit["data_frames"] += 1
                    self._in_flight[frame.seq] = len(p.encode(frame))
                    audit["max_in_flight"] = max(audit["max_in_flight"], sum(self._in_flight.values()))
                elif frame.type == p.RESULT:
                    self._in_flight.pop(frame.seq, None)

    def _pump(self, source_fd, target_fd, decoder: p.Decoder) -> None:
        next_free = time.monotonic()
        while not self.stopping.is_set():
            source = source_fd()
            if source is None:          # unplugged: nothing comes from that side
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(source, 4096)
            except (OSError, ValueError):
                time.sleep(0.01)        # no one has the slave open right now, or it was just unplugged
                continue
            if self.cut.is_set():
                continue
            data = self._damage(data)
            if self.credit_audit is not None:
                self._audit(decoder, data)
            baud = self.baud            # a test may change the pace mid-stream
            if baud:
                # Pace per chunk of up to 64 bytes: 10 bits per byte on the wire.
                for start in range(0, len(data), 64):
                    piece = data[start:start + 64]
                    next_free = max(next_free, time.monotonic()) + len(piece) * 10 / baud
                    delay = next_free - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self._write(target_fd(), piece)
            else:
                self._write(target_fd(), data)

    def _write(self, fd: int | None, data: bytes) -> None:
        while data and fd is not None and not self.stopping.is_set():
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            self.forwarded += n
            data = data[n:]


def _raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)               # no echo, no line discipline: bytes pass as they are
    return master, slave

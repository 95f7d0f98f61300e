"""A fault-injecting serial relay between two pseudo-terminals, for the link tests and the
throughput benchmark.

``Relay`` opens two pty pairs: the host opens ``host_port``, the device agent ``device_port``;
two threads copy bytes between the masters, one per direction, optionally paced to a baud rate
(10 bits per byte) and damaged on the way: bit flips, dropped bytes, or a cut (everything
discarded until ``restore``), as a UART line and its cable do.

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

from firmware_host import protocol as p


class Relay:
    def __init__(self, *, baud: int | None = None, flip_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 0,
                 audit: bool = False):
        self.baud = baud
        self.flip_rate = flip_rate
        self.drop_rate = drop_rate
        self.random = random.Random(seed)
        self.flipped = 0
        self.dropped = 0
        self.forwarded = 0
        self.cut = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.credit_audit = {"credit": None, "max_in_flight": 0, "data_frames": 0} if audit else None
        self._in_flight: dict[int, int] = {}      # first sample of an unanswered DATA frame -> its wire bytes
        self.host_master, self._host_slave = os.openpty()
        self.device_master, self._device_slave = os.openpty()
        for fd in (self._host_slave, self._device_slave):
            tty.setraw(fd)          # no echo, no line discipline: bytes pass as they are
        self.host_port = os.ttyname(self._host_slave)
        self.device_port = os.ttyname(self._device_slave)
        self._threads = [threading.Thread(target=self._pump, args=(self.host_master, self.device_master, p.Decoder()),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.device_master, self.host_master, p.Decoder()),
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
            try:
                os.close(fd)
            except OSError:
                pass

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

    def _pump(self, source: int, target: int, decoder: p.Decoder) -> None:
        next_free = time.monotonic()
        while not self.stopping.is_set():
            ready, _, _ = select.select([source], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(source, 4096)
            except OSError:
                time.sleep(0.01)        # no one has the slave open right now
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
                    self._write(target, piece)
            else:
                self._write(target, data)

    def _write(self, fd: int, data: bytes) -> None:
        while data and not self.stopping.is_set():
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            self.forwarded += n
            data = data[n:]

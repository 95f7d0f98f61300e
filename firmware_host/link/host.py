"""The host's I/O: one driver loop that runs a session over a transport, and the two operations
built on it, ``stream`` and ``push``.

The driver reads what arrives, decodes frames, hands them and the passing time to the session
and writes what the session answers. When the port vanishes (a ``PortError`` on a read or a
write: the USB adapter was pulled), it reopens the same path with backoff until
``give_up_after`` seconds have passed, then tells the session, which re-handshakes and goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import BundleError, DataError, LinkError
from ..manifest import GOLDEN_FILE, MANIFEST_FILE, MODEL_FILE, load_manifest
from . import protocol as p
from .push import PushSession
from .readahead import ReadAhead
from .session import GIVE_UP_AFTER, StreamSession, StreamStats, quiet
from .transport import PortError, Transport

READ_BYTES = 4096             # most bytes taken from the port per read
POLL = 0.02                   # seconds a read waits for its first byte: the session's clock resolution
REOPEN_DELAYS = (0.1, 0.2, 0.5, 1.0)   # seconds between attempts to reopen a vanished port, then 1 s each


class Driver:
    """Runs sessions over one transport; keeps the decoder and the byte counts between them."""

    def __init__(self, transport: Transport, *, give_up_after: float = GIVE_UP_AFTER,
                 log: Callable[[str], None] = quiet, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.transport = transport
        self.give_up_after = give_up_after
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.decoder = p.Decoder()
        self.bytes_sent = 0

    @property
    def crc_errors(self) -> int:
        return self.decoder.crc_errors

    def run(self, session, *, until: Callable[[], bool] | None = None, feed: Callable[[], None] | None = None) -> None:
        """Drive ``session`` until it is finished, or ``until()`` is true. ``feed()`` is called
        before the session sees the time pass, to give it input."""
        until = until or (lambda: session.finished)
        out = [] if session.started else session.start(self.clock())
        while True:
            try:
                self._write(out)
                if until():
                    return
                data = self.transport.read(READ_BYTES, POLL)
                now = self.clock()
                out = []
                for frame in self.decoder.feed(data):
                    out += session.on_frame(frame, now)
                if feed:
                    feed()
                out += session.on_time(now)
            except PortError as exc:
                self._reopen(exc)
                out = session.on_reconnect(self.clock())

    def _write(self, frames: list[p.Frame]) -> None:
        if frames:
            wire = b"".join(p.encode(frame) for frame in frames)
            self.transport.write(wire)
            self.bytes_sent += len(wire)

    def _reopen(self, lost: PortError) -> None:
        """Reopen the same port with backoff; LinkError once it stayed away ``give_up_after`` seconds."""
        self.log(f"{lost}; reopening")
        deadline = self.clock() + self.give_up_after
        delays = iter(REOPEN_DELAYS)
        while True:
            try:
                self.transport.reopen()
            except PortError as exc:
                if self.clock() >= deadline:
                    raise LinkError(f"{self.transport.name} vanished and was not back within "
                                    f"{self.give_up_after:g} s; giving up ({exc})") from None
                self.sleep(next(delays, REOPEN_DELAYS[-1]))
                continue
            self.decoder.reset()              # a frame cut in half by the unplug is gone
            return


def stream(driver: Driver, session: StreamSession, batches: Iterable[np.ndarray]) -> StreamStats:
    """Send every int8 sample of ``batches``; the session delivers the verdicts. Raises LinkError
    when the device refuses or the link is gone for good, and a DataError from ``batches`` once
    every sample read before it has its verdict. ``session.stats`` holds the figures either way."""
    # Read in a thread: a pipe's next row may be minutes away, and the frames due now must not
    # wait for it. The reader wakes the driver's read of the line when a batch arrives.
    source = ReadAhead(batches, wake=driver.transport.wake)
    bad_input: DataError | None = None

    def feed() -> None:
        nonlocal bad_input
        while session.wants_input:
            item = source.take()
            if item is None:
                break
            if item is ReadAhead.END:
                session.end_input()
            elif isinstance(item, DataError):
                # Bad input: finish what was read before it, so every row before the bad batch
                # gets its verdict, then report it.
                bad_input = item
                session.end_input()
            elif isinstance(item, BaseException):
                raise item
            else:
                session.add_samples(item)
        # Nothing more has arrived: the session frames what it holds now instead of waiting to
        # fill a frame (a live row goes out in the next frame).
        session.input_idle = not source.waiting()

    started = driver.clock()
    try:
        driver.run(session, feed=feed)
    finally:
        source.close()
        stats = session.stats
        stats.seconds = driver.clock() - started
        stats.crc_errors = driver.crc_errors
        stats.bytes_sent = driver.bytes_sent
        stats.reconnects = session.reconnects
    if bad_input is not None:
        raise bad_input
    return stats


def push(driver: Driver, bundle: str | Path, *, log: Callable[[str], None] = quiet,
         progress: Callable[[int], None] | None = None, baud: int = 115200) -> dict:
    """Push a bundle's model, manifest and golden vectors; returns what the device then reports.

    Each chunk travels in its own CRC-checked frame and is re-sent until acknowledged; a chunk
    damaged on the line fails its CRC on the device, is dropped, and goes again after a timeout."""
    bundle = Path(bundle)
    files = []
    for name in (MODEL_FILE, MANIFEST_FILE, GOLDEN_FILE):
        try:
            files.append((name, (bundle / name).read_bytes()))
        except FileNotFoundError:
            raise BundleError(f"{bundle}: {name} is missing; is this a tinyad bundle?") from None
    session = PushSession(files, load_manifest(bundle).sha256, port=driver.transport.name, baud=baud,
                          give_up_after=driver.give_up_after, log=log, progress=progress)
    driver.run(session)
    return {**session.result, "crc_errors": driver.crc_errors}

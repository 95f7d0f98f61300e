"""The host side of the link: stream rows to a device and collect one verdict per row, and push
a bundle to it.

Rows are scaled and quantized here, with the bundle's manifest, and travel as int8 (one byte
per feature). DATA frames are numbered by sample; the host keeps at most the device's credit
of DATA bytes unacknowledged, re-sends every unacknowledged frame after a timeout (go-back-N),
and re-handshakes when the device stops answering. A device that restarted (a new session)
lost its window state: the host replays the W-1 samples before the first one still owed a
verdict as warm-up and discards their answers, so every verdict equals ``tinyad run``'s.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import protocol as p
from .errors import DataError, LinkError
from .link import Link
from .manifest import GOLDEN_FILE, MANIFEST_FILE, MODEL_FILE, Manifest
from .scoring import Verdicts

TARGET_FRAME_BYTES = 512       # DATA payload per frame: 16 bytes of framing then cost ~3 %
HANDSHAKE_TIMEOUT = 1.0        # seconds to wait for CAPS
RETRANSMIT_TIMEOUT = 0.3       # seconds without progress before re-sending (plus the line time ahead)
MAX_TRIES = 6                  # re-sends of the same frames before re-handshaking
GIVE_UP_AFTER = 30.0           # seconds without any progress before the stream fails


@dataclass
class StreamStats:
    samples: int = 0
    anomalies: int = 0
    retransmissions: int = 0           # DATA frames sent again
    resyncs: int = 0                   # handshakes after the first (link cut, device restarted)
    replayed: int = 0                  # warm-up samples re-sent after a device restart
    crc_errors: int = 0
    bytes_sent: int = 0
    payload_bytes: int = 0             # one byte per feature per sample, first sends only
    round_trips_ms: list = field(default_factory=list)
    seconds: float = 0.0
    missing: int = 0                   # rows that ended without a verdict

    @property
    def efficiency(self) -> float:
        """Sample bytes over all bytes the host put on the line (framing, handshakes, re-sends)."""
        return self.payload_bytes / self.bytes_sent if self.bytes_sent else float("nan")

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.round_trips_ms, q)) if self.round_trips_ms else float("nan")

    def summary(self) -> dict:
        return {"samples": self.samples, "anomalies": self.anomalies, "retransmissions": self.retransmissions,
                "resyncs": self.resyncs, "replayed": self.replayed, "crc_errors": self.crc_errors,
                "bytes_sent": self.bytes_sent, "link_efficiency": self.efficiency,
                "rtt_ms_p50": self.latency_ms(50), "rtt_ms_p99": self.latency_ms(99), "seconds": self.seconds,
                "samples_per_second": self.samples / self.seconds if self.seconds else float("nan"),
                "missing": self.missing}


@dataclass
class _Frame:
    first: int              # sample number of its first sample
    samples: np.ndarray     # (n, features) int8
    wire: int = 0           # bytes on the wire
    sent_at: float = 0.0    # first send
    last_sent: float = 0.0
    queued: int = 0         # line bytes, both ways, ahead of its answer when last sent (its own included)

    @property
    def line_bytes(self) -> int:
        """Its DATA frame plus the RESULT that answers it (count, items and framing)."""
        return self.wire + len(self.samples) * p.RESULT_ITEM.size + p.HEADER.size + p.CRC.size + 4


class Session:
    """One host <-> device conversation over an open ``Link``."""

    def __init__(self, link: Link, manifest: Manifest, *, log: Callable[[str], None] = lambda m: None,
                 retransmit_timeout: float = RETRANSMIT_TIMEOUT, give_up_after: float = GIVE_UP_AFTER,
                 baud: int = 115200):
        self.link = link
        self.baud = baud
        self.manifest = manifest
        self.log = log
        self.rto = retransmit_timeout
        self.give_up_after = give_up_after
        self.caps: p.Caps | None = None
        self.stats = StreamStats()

    # -- handshake ---------------------------------------------------------------------------
    def handshake(self, attempts: int = 5) -> p.Caps:
        """HELLO until CAPS; checks version, readiness and model hash."""
        last_error = "no answer"
        for _ in range(attempts):
            self._send(p.hello())
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            caps = None
            while time.monotonic() < deadline:
                for frame in self.link.receive(0.05):
                    if frame.type == p.CAPS:
                        caps = p.Caps.unpack(frame.body)
                    elif frame.type == p.ERROR:
                        code, text = p.unpack_error(frame)
                        if code in (p.E_VERSION, p.E_SELF_TEST):
                            raise LinkError(f"the device refuses to serve: {p.describe_error(code, text)}")
                        last_error = p.describe_error(code, text)
                if caps is not None:
                    break
            if caps is None:
                continue
            if caps.version != p.PROTOCOL_VERSION:
                raise LinkError(f"the device speaks tinyad protocol {caps.version}, this host speaks "
                                f"{p.PROTOCOL_VERSION}; install the same tinyad version on both ends")
            if not caps.ready:
                raise LinkError(f"the device refuses to serve: {caps.status}")
            if caps.model_sha256 != self.manifest.sha256:
                raise LinkError(f"the device serves model {caps.model_sha256[:12]}..., this bundle is "
                                f"{self.manifest.sha256[:12]}...; push it first with 'tinyad deploy'")
            if caps.features != len(self.manifest.features) or caps.window != self.manifest.window:
                raise LinkError("the device's input spec does not match the bundle's manifest")
            self.caps = caps
            return caps
        raise LinkError(f"no CAPS from the device on {self.link.port_name} after {attempts} HELLOs ({last_error}); "
                        "is 'tinyad device' running on the other end, at the same baud rate?")

    def sync(self, next_seq: int, attempts: int = 5) -> None:
        for _ in range(attempts):
            self._send(p.sync(next_seq))
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            while time.monotonic() < deadline:
                for frame in self.link.receive(0.05):
                    if frame.type == p.ACK and frame.seq == next_seq:
                        return
                    if frame.type == p.ERROR:
                        code, text = p.unpack_error(frame)
                        if code != p.E_NOT_SYNCED:      # late answers to DATA sent before this SYNC
                            raise LinkError(p.describe_error(code, text))
        raise LinkError(f"the device did not acknowledge SYNC on {self.link.port_name}")

    def _send(self, frame: p.Frame) -> int:
        n = self.link.send(frame)
        self.stats.bytes_sent += n
        return n

    # -- streaming ---------------------------------------------------------------------------
    def stream(self, batches: Iterable[np.ndarray], on_verdicts: Callable[[int, Verdicts], None],
               progress: Callable[[int], None] | None = None) -> StreamStats:
        """Send every int8 sample of ``batches``; call ``on_verdicts(first_row, verdicts)`` in input
        order as verdicts arrive. Raises LinkError when the device refuses or stops answering
        (``stats.missing`` then counts the rows left without a verdict), and a DataError from
        ``batches`` once every sample read before it has its verdict. ``stats`` holds the
        figures either way."""
        started = time.monotonic()
        try:
            return self._stream(batches, on_verdicts, progress)
        finally:
            self.stats.seconds = time.monotonic() - started
            self.stats.crc_errors = self.link.crc_errors

    def _stream(self, batches, on_verdicts, progress) -> StreamStats:
        caps = self.caps or self.handshake()
        session = caps.session
        window = max(int(self.manifest.window), 1)
        features = len(self.manifest.features)
        per_frame = max(1, min(caps.max_batch, TARGET_FRAME_BYTES // max(features, 1)))
        source: Iterator[np.ndarray] = iter(batches)
        unsent: deque[np.ndarray] = deque()        # single samples waiting to be framed
        next_number = 0                             # number of the next sample to frame
        pending: deque[_Frame] = deque()            # sent, no RESULT yet
        history: deque[np.ndarray] = deque(maxlen=window - 1 if window > 1 else 0)   # last verdicted samples
        owed = 0                                    # first sample still owed a verdict
        ignore_below = 0                            # answers for samples below this are warm-up replays
        exhausted = False
        bad_input: DataError | None = None
        tries = 0
        last_progress = time.monotonic()
        self.sync(0)

        def resync(new_session: bool) -> None:
            nonlocal next_number, ignore_below, tries
            self.stats.resyncs += 1
            back_frames = list(pending)
            pending.clear()
            rest = [sample for frame in back_frames for sample in frame.samples]
            if new_session:
                replay = list(history)
                start = owed - len(replay)
                self.stats.replayed += len(replay)
                self.log(f"device restarted (new session): replaying {len(replay)} warm-up samples from {start}")
                ignore_below = owed
                self.sync(start)
                for sample in reversed(rest):
                    unsent.appendleft(sample)
                for sample in reversed(replay):
                    unsent.appendleft(sample)
                next_number = start
            else:
                # Same session: the device kept its state and caches its recent answers. Re-send
                # the very same frames; those it already applied come back from its cache.
                for frame in back_frames:
                    pending.append(frame)
                self.log(f"link back (same session): re-sending {len(pending)} frames from sample {owed}")
                self._resend(pending)
            tries = 0

        while True:
            # 1. fill the credit window
            in_flight = sum(f.wire for f in pending)
            while True:
                while len(unsent) < per_frame and not exhausted:
                    try:
                        batch = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except DataError as exc:
                        # Bad input: finish what is in flight, so every row before the bad
                        # batch gets its verdict, then report it.
                        exhausted, bad_input = True, exc
                        break
                    unsent.extend(np.asarray(batch, dtype=np.int8))
                if not unsent:
                    break
                count = min(per_frame, len(unsent))
                samples = np.stack([unsent.popleft() for _ in range(count)])
                frame = _Frame(next_number, samples)
                wire_size = len(p.encode(p.data(frame.first, samples)))
                if pending and in_flight + wire_size > caps.credit:
                    for sample in reversed(samples):
                        unsent.appendleft(sample)
                    break
                frame.wire = self._send(p.data(frame.first, samples))
                if frame.first >= ignore_below:
                    self.stats.payload_bytes += samples.size
                frame.sent_at = frame.last_sent = time.monotonic()
                frame.queued = sum(f.line_bytes for f in pending) + frame.line_bytes
                pending.append(frame)
                in_flight += frame.wire
                next_number += count
            if not pending and exhausted and not unsent:
                break
            # 2. read answers
            for reply in self.link.receive(0.02):
                if reply.type == p.RESULT and pending and reply.seq == pending[0].first:
                    frame = pending.popleft()
                    results = p.unpack_result(reply)
                    if len(results) != len(frame.samples):
                        raise LinkError(f"RESULT for sample {reply.seq} holds {len(results)} verdicts for "
                                        f"{len(frame.samples)} samples")
                    self.stats.round_trips_ms.append(1000 * (time.monotonic() - frame.sent_at))
                    keep = [i for i in range(len(results)) if frame.first + i >= ignore_below]
                    for i in keep:
                        history.append(frame.samples[i])
                    if keep:
                        verdicts = _verdicts([results[i] for i in keep])
                        on_verdicts(frame.first + keep[0], verdicts)
                        self.stats.samples += len(keep)
                        self.stats.anomalies += int(verdicts.is_anomaly.sum())
                        owed = frame.first + keep[-1] + 1
                        if progress:
                            progress(len(keep))
                    tries = 0
                    last_progress = time.monotonic()
                elif reply.type == p.ACK and pending and reply.seq == pending[0].first:
                    # The device is waiting for our oldest frame: it lost it. Re-send now.
                    if time.monotonic() - pending[0].last_sent > min(self.rto, 0.1):
                        self._resend(pending)
                elif reply.type == p.ERROR:
                    code, text = p.unpack_error(reply)
                    if code == p.E_NOT_SYNCED:
                        caps = self.handshake()
                        resync(new_session=caps.session != session)
                        session = caps.session
                        break
                    raise LinkError(f"the device stopped the stream: {p.describe_error(code, text)}")
            # 3. time-outs
            now = time.monotonic()
            # Frames and answers queue behind each other on a slow line: allow for the bytes that
            # were ahead of this answer when the frame went out (10 bits a byte).
            line_time = pending[0].queued * 10 / self.baud if pending else 0.0
            if pending and now - pending[0].last_sent > self.rto * (1 + tries) + line_time:
                tries += 1
                if tries <= MAX_TRIES:
                    self._resend(pending)
                else:
                    self.log("no answer to re-sent frames: re-handshaking")
                    caps = self.handshake(attempts=int(self.give_up_after / HANDSHAKE_TIMEOUT))
                    resync(new_session=caps.session != session)
                    session = caps.session
            if now - last_progress > self.give_up_after:
                raise LinkError(f"no verdict for {self.give_up_after:.0f} s; giving up")
        if bad_input is not None:
            raise bad_input
        return self.stats

    def _resend(self, pending: deque) -> None:
        now = time.monotonic()
        queued = 0
        for frame in pending:
            self._send(p.data(frame.first, frame.samples))
            queued += frame.line_bytes
            frame.last_sent, frame.queued = now, queued
            self.stats.retransmissions += 1


def _verdicts(results: list[tuple[float, int, int]]) -> Verdicts:
    scores = np.array([r[0] for r in results], dtype=np.float64)
    flags = np.array([r[1] for r in results], dtype=np.uint8)
    return Verdicts(scores=scores, is_anomaly=(flags & p.F_ANOMALY) > 0,
                    predicted=np.array([r[2] for r in results], dtype=np.int64),
                    warming_up=(flags & p.F_WARMING_UP) > 0)


# -- model push --------------------------------------------------------------------------------

CHUNK_BYTES = 1024


def deploy(link: Link, bundle: str | Path, *, chunk: int = CHUNK_BYTES, baud: int = 115200, tries: int = 10,
           log: Callable[[str], None] = lambda m: None, progress: Callable[[int], None] | None = None) -> dict:
    """Push a bundle's model, manifest and golden vectors; returns what the device then reports.

    Each chunk travels in its own CRC-checked frame and is re-sent until acknowledged; a chunk
    damaged on the line fails its CRC on the device, is dropped, and goes again after a
    timeout of twice its line time plus 0.2 s."""
    timeout = 0.2 + 2 * (chunk + 32) * 10 / baud
    bundle = Path(bundle)
    payloads = []
    for name in (MODEL_FILE, MANIFEST_FILE, GOLDEN_FILE):
        try:
            payloads.append((name, (bundle / name).read_bytes()))
        except FileNotFoundError:
            raise LinkError(f"{bundle}: {name} is missing; is this a tinyad bundle?") from None
    files = [(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in payloads]
    blob = b"".join(data for _, data in payloads)
    chunks = [blob[i:i + chunk] for i in range(0, len(blob), chunk)]
    resent = 0

    def exchange(frame: p.Frame, want: Callable[[p.Frame], bool], what: str, wait: float = timeout) -> p.Frame:
        nonlocal resent
        for attempt in range(tries):
            link.send(frame)
            if attempt:
                resent += 1
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                for reply in link.receive(0.05):
                    if reply.type == p.ERROR:
                        raise LinkError(f"model push failed at {what}: {p.describe_error(*p.unpack_error(reply))}")
                    if want(reply):
                        return reply
        raise LinkError(f"model push: no answer to {what} after {tries} tries")

    exchange(p.model_begin(files, chunk), lambda r: r.type == p.ACK and r.seq == 0, "MODEL_BEGIN")
    index = 0
    while index < len(chunks):
        reply = exchange(p.model_chunk(index, chunks[index]), lambda r: r.type == p.ACK, f"chunk {index}")
        if reply.seq == index + 1:
            index += 1
            if progress:
                progress(1)
        elif reply.seq <= index:
            index = reply.seq       # the device asks for an earlier chunk
    # Installing means loading and self-testing the new model on the device: allow it time.
    reply = exchange(p.model_end(), lambda r: r.type == p.CAPS, "MODEL_END", wait=max(timeout, 30.0))
    caps = p.Caps.unpack(reply.body)
    return {"bytes": len(blob), "chunks": len(chunks), "resent": resent, "model_sha256": caps.model_sha256,
            "ready": caps.ready, "status": caps.status, "crc_errors": link.crc_errors}

"""The host's side of a conversation with a device, as state machines with no I/O.

A session is driven by events and answers each with the frames to send:

- ``start(now)``: the first frames (a HELLO);
- ``on_frame(frame, now)``: a whole, CRC-checked frame arrived;
- ``on_time(now)``: time passed (called after every read, whether or not anything arrived);
- ``on_reconnect(now)``: the driver had to reopen a vanished port; bytes in flight are lost.

``now`` is in seconds on any monotonic clock, so tests run a session on a fake one. Sessions
never read, write or sleep; ``host.Driver`` does that for them. Fatal conditions (a device that
refuses, no answer for ``give_up_after`` seconds) raise ``LinkError``.

``StreamSession`` streams int8 samples and delivers one verdict per sample in input order:
DATA frames within the device's credit, go-back-N re-sends after a timeout, a re-handshake when
the device stops answering or the port comes back, and after a device restart a SYNC and a
replay of the samples that rebuild the device's stream state (``runner.replay_length``), their
answers discarded. ``push.PushSession`` shares the handshake and pushes a bundle.

Samples are numbered from 0 in input order with unbounded Python ints; on the wire a number is
``(first_seq + n) mod 2^32``, and every comparison with a number from the wire is made there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import LinkError
from ..manifest import Manifest
from ..runner import replay_length
from ..scoring import Verdicts
from . import protocol as p

TARGET_FRAME_BYTES = 512       # DATA payload per frame: 16 bytes of framing then cost ~3 %
FRAME_ROOM = 64                # bytes of a credit kept for a frame's framing and SLIP escapes
HANDSHAKE_TIMEOUT = 1.0        # seconds to wait for CAPS (or a SYNC's ACK) before asking again
HANDSHAKE_ATTEMPTS = 5         # HELLOs before a first handshake fails (no device there)
RETRANSMIT_TIMEOUT = 0.3       # seconds without an answer before re-sending (plus the line time ahead)
MAX_TRIES = 6                  # re-sends of the same frames before re-handshaking
NAK_HOLDOFF = 0.1              # an ACK naming our oldest frame re-sends it unless it went out this recently
GIVE_UP_AFTER = 30.0           # seconds without progress before a session fails

Log = Callable[[str], None]


def quiet(message: str) -> None:
    pass


class Session:
    """The handshake, the give-up clock and reconnects, shared by the stream and the push.

    Subclasses implement ``_connected(caps, first, new_session, now)`` (CAPS accepted),
    ``_frame(frame, now)`` and ``_time(now)`` (events once connected)."""

    needs_ready = True          # a device that failed its self-test is refused (a push does not need it)
    explain = 0                 # features the device names behind each flagged verdict (HELLO asks)

    def __init__(self, *, port: str, give_up_after: float, log: Log):
        self.port = port
        self.give_up_after = give_up_after
        self.log = log
        self.caps: p.Caps | None = None
        self.started = False
        self.finished = False
        self.reconnects = 0
        self._handshaking = False
        self._hellos = 0
        self._hello_at = 0.0
        self._last_error = "no answer"
        self._progress_at = 0.0

    # -- events ------------------------------------------------------------------------------
    def start(self, now: float) -> list[p.Frame]:
        self.started = True
        self._progress_at = now
        return self._handshake(now)

    def on_reconnect(self, now: float) -> list[p.Frame]:
        self.reconnects += 1
        self._progress_at = now           # the port is back: the give-up clock starts again
        self.log(f"{self.port} is back: re-handshaking")
        return self._handshake(now)

    def on_frame(self, frame: p.Frame, now: float) -> list[p.Frame]:
        if self.finished:
            return []
        if self._handshaking:
            return self._handshake_frame(frame, now)
        return self._frame(frame, now)

    def on_time(self, now: float) -> list[p.Frame]:
        if self.finished:
            return []
        if now - self._progress_at > self.give_up_after:
            raise LinkError(f"no progress for {self.give_up_after:g} s on {self.port}; giving up")
        if not self._handshaking:
            return self._time(now)
        if now - self._hello_at < HANDSHAKE_TIMEOUT:
            return []
        if self.caps is None and self._hellos >= HANDSHAKE_ATTEMPTS:
            raise LinkError(f"no CAPS from the device on {self.port} after {self._hellos} HELLOs "
                            f"({self._last_error}); is 'tinyad device' running on the other end, at the same "
                            "baud rate?")
        self._hellos += 1
        self._hello_at = now
        return [p.hello(explain=self.explain)]

    # -- handshake ---------------------------------------------------------------------------
    def _handshake(self, now: float) -> list[p.Frame]:
        """HELLO until CAPS; a first handshake gives up after HANDSHAKE_ATTEMPTS, a later one
        (the device was there before) only on the give-up clock."""
        self._handshaking = True
        self._hellos = 1
        self._hello_at = now
        return [p.hello(explain=self.explain)]

    def _handshake_frame(self, frame: p.Frame, now: float) -> list[p.Frame]:
        if frame.type == p.ERROR:
            code, text = p.unpack_error(frame)
            if code == p.E_VERSION or (code == p.E_SELF_TEST and self.needs_ready):
                raise LinkError(f"the device refuses to serve: {p.describe_error(code, text)}")
            self._last_error = p.describe_error(code, text)
            return []
        if frame.type != p.CAPS:
            return []                      # late answers to what was sent before the handshake
        caps = p.Caps.unpack(frame.body)
        if caps.version != p.PROTOCOL_VERSION:
            raise LinkError(f"the device speaks tinyad protocol {caps.version}, this host speaks "
                            f"{p.PROTOCOL_VERSION}; install the same tinyad version on both ends")
        if self.needs_ready and not caps.ready:
            raise LinkError(f"the device refuses to serve: {caps.status}")
        first = self.caps is None
        new_session = not first and caps.session != self.caps.session
        self.caps = caps
        self._handshaking = False
        return self._connected(caps, first, new_session, now)

    def _connected(self, caps: p.Caps, first: bool, new_session: bool, now: float) -> list[p.Frame]:
        raise NotImplementedError

    def _frame(self, frame: p.Frame, now: float) -> list[p.Frame]:
        raise NotImplementedError

    def _time(self, now: float) -> list[p.Frame]:
        raise NotImplementedError


# -- streaming ---------------------------------------------------------------------------------

@dataclass
class StreamStats:
    samples: int = 0                   # verdicts delivered
    anomalies: int = 0
    retransmissions: int = 0           # DATA frames sent again
    resyncs: int = 0                   # handshakes after the first (link cut, device restarted, port back)
    replayed: int = 0                  # warm-up samples re-sent after a device restart
    reconnects: int = 0                # times the host's port vanished and was reopened
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
                "resyncs": self.resyncs, "replayed": self.replayed, "reconnects": self.reconnects,
                "crc_errors": self.crc_errors, "bytes_sent": self.bytes_sent, "link_efficiency": self.efficiency,
                "rtt_ms_p50": self.latency_ms(50), "rtt_ms_p99": self.latency_ms(99), "seconds": self.seconds,
                "samples_per_second": self.samples / self.seconds if self.seconds else float("nan"),
                "missing": self.missing}


@dataclass
class _Sent:
    """A DATA frame sent and not yet answered."""

    first: int              # number of its first sample
    count: int
    frame: p.Frame
    wire: int               # its bytes on the wire
    sent_at: float          # first send
    last_sent: float
    queued: int             # line bytes, both ways, ahead of its answer when last sent (its own included)
    why_bytes: int = 0      # the most its answer's why section can take (every sample flagged)

    @property
    def line_bytes(self) -> int:
        """Its DATA frame plus the RESULT that answers it (count, items, why section and framing)."""
        return self.wire + self.count * p.RESULT_ITEM.itemsize + self.why_bytes + p.HEADER.size + p.CRC.size + 4


class StreamSession(Session):
    """Streams int8 samples (``add_samples``) and calls ``on_verdicts(first_row, verdicts)`` in input
    order, exactly once per sample. ``first_seq`` is the wire number of sample 0 (any uint32)."""

    def __init__(self, manifest: Manifest, on_verdicts: Callable[[int, Verdicts], None], *, port: str = "the port",
                 first_seq: int = 0, baud: int = 115200, retransmit_timeout: float = RETRANSMIT_TIMEOUT,
                 give_up_after: float = GIVE_UP_AFTER, log: Log = quiet,
                 progress: Callable[[int], None] | None = None, explain: int = 0):
        super().__init__(port=port, give_up_after=give_up_after, log=log)
        self.manifest = manifest
        self.explain = explain
        self.on_verdicts = on_verdicts
        self.progress = progress
        self.first_seq = first_seq & p.SEQ_MASK
        self.baud = baud
        self.rto = retransmit_timeout
        self.features = len(manifest.features)
        self.per_frame = max(1, TARGET_FRAME_BYTES // self.features)
        self.stats = StreamStats()
        self.owed = 0                                   # first sample still owed a verdict
        self.queue: deque[np.ndarray] = deque()         # samples owed..owed+len-1, framed or not
        self.history: deque[np.ndarray] = deque(maxlen=replay_length(manifest))   # the last verdicted samples
        self.replay: list[np.ndarray] = []              # samples owed-len..owed-1 being replayed as warm-up
        self.next_number = 0                            # the next sample to frame
        self.pending: deque[_Sent] = deque()
        self.input_ended = False
        self.input_idle = False                         # no more input has arrived yet: send part frames
        self.connected = False                          # the first SYNC was acknowledged
        self._sent_high = 0                             # samples below this went out at least once
        self._syncing: int | None = None                # a SYNC to this sample awaits its ACK
        self._sync_tries = 0
        self._sync_at = 0.0
        self._state_lost = False                        # the device said "not synced": SYNC and replay
        self._tries = 0

    def wire(self, number: int) -> int:
        return (self.first_seq + number) & p.SEQ_MASK

    # -- input -------------------------------------------------------------------------------
    @property
    def wants_input(self) -> bool:
        """Fewer samples waiting than one frame holds: feed another batch (or ``end_input``)."""
        return not self.input_ended and self.owed + len(self.queue) - self.next_number < self.per_frame

    def add_samples(self, samples: np.ndarray) -> None:
        """Quantized samples (rows, features), in input order."""
        self.queue.extend(np.asarray(samples, dtype=np.int8).reshape(-1, self.features))

    def end_input(self) -> None:
        self.input_ended = True
        self._check_done()

    # -- connection --------------------------------------------------------------------------
    def _connected(self, caps, first, new_session, now):
        if caps.model_sha256 != self.manifest.sha256:
            raise LinkError(f"the device serves model {caps.model_sha256[:12]}..., this bundle is "
                            f"{self.manifest.sha256[:12]}...; push it first with 'tinyad deploy'")
        if caps.features != self.features or caps.window != self.manifest.window:
            raise LinkError("the device's input spec does not match the bundle's manifest")
        # A frame fits the credit with room for its framing and a few SLIP escapes.
        self.per_frame = max(1, min(caps.max_batch, TARGET_FRAME_BYTES // self.features,
                                    (caps.credit - FRAME_ROOM) // self.features))
        if first:
            return self._sync(0, now)
        self.stats.resyncs += 1
        if new_session or self._state_lost:
            return self._replay(now, "device restarted (new session)" if new_session else "device lost its state")
        if self._syncing is not None:
            return self._sync(self._syncing, now)         # the same device; our SYNC never got its ACK
        # The same session: the device kept its state and caches its recent answers. Re-send the
        # very same frames; those it already applied come back from its cache.
        self.log(f"link back (same session): re-sending {len(self.pending)} frames from sample {self.owed}")
        return self._resend(now)

    def _replay(self, now: float, why: str) -> list[p.Frame]:
        """SYNC to the start of the replay window and frame everything owed again after it."""
        self.pending.clear()
        self.replay = list(self.history)
        start = self.owed - len(self.replay)
        self.stats.replayed += len(self.replay)
        self.next_number = start
        self._state_lost = False
        self.log(f"{why}: replaying {len(self.replay)} warm-up samples from {start}")
        return self._sync(start, now)

    def _sync(self, number: int, now: float) -> list[p.Frame]:
        self._syncing = number
        self._sync_tries = 1
        self._sync_at = now
        return [p.sync(self.wire(number))]

    # -- events once connected ---------------------------------------------------------------
    def _frame(self, frame, now):
        if self._syncing is not None:
            if frame.type == p.ACK and frame.seq == self.wire(self._syncing):
                self._syncing = None
                self.connected = True
                self._check_done()
                return []
            if frame.type == p.ERROR:
                code, text = p.unpack_error(frame)
                if code != p.E_NOT_SYNCED:                # late answers to DATA sent before this SYNC
                    raise LinkError(f"the device stopped the stream: {p.describe_error(code, text)}")
            return []
        if frame.type == p.RESULT and self.pending and frame.seq == self.wire(self.pending[0].first):
            self._result(self.pending.popleft(), p.unpack_result(frame, self.manifest.features if self.explain else None), now)
            return []
        if frame.type == p.ACK and self.pending and frame.seq == self.wire(self.pending[0].first):
            # The device is waiting for our oldest frame: it lost it. Re-send now.
            if now - self.pending[0].last_sent > min(self.rto, NAK_HOLDOFF):
                return self._resend(now)
            return []
        if frame.type == p.ERROR:
            code, text = p.unpack_error(frame)
            if code == p.E_NOT_SYNCED:
                self._state_lost = True
                return self._handshake(now)
            raise LinkError(f"the device stopped the stream: {p.describe_error(code, text)}")
        return []

    def _result(self, sent: _Sent, verdicts: Verdicts, now: float) -> None:
        if len(verdicts.scores) != sent.count:
            raise LinkError(f"RESULT for sample {sent.first} holds {len(verdicts.scores)} verdicts for "
                            f"{sent.count} samples")
        self.stats.round_trips_ms.append(1000 * (now - sent.sent_at))
        self._tries = 0
        self._progress_at = now
        skip = self.owed - sent.first                    # warm-up replays: their answers are discarded
        if skip >= sent.count:
            return
        kept = _tail(verdicts, skip) if skip > 0 else verdicts
        count = sent.count - max(skip, 0)
        for _ in range(count):
            self.history.append(self.queue.popleft())
        first_row = self.owed
        self.owed += count
        self.stats.samples += count
        self.stats.anomalies += int(np.sum(kept.is_anomaly))
        self.on_verdicts(first_row, kept)
        if self.progress:
            self.progress(count)
        self._check_done()

    def _time(self, now):
        if self._syncing is not None:
            if now - self._sync_at <= HANDSHAKE_TIMEOUT:
                return []
            if self._sync_tries >= HANDSHAKE_ATTEMPTS:
                self.log("no ACK to SYNC: re-handshaking")
                return self._handshake(now)
            self._sync_tries += 1
            self._sync_at = now
            return [p.sync(self.wire(self._syncing))]
        out = self._fill(now)
        if self.pending:
            oldest = self.pending[0]
            # Frames and answers queue behind each other on a slow line: allow for the bytes that
            # were ahead of this answer when the frame went out (10 bits a byte).
            line_time = oldest.queued * 10 / self.baud
            if now - oldest.last_sent > self.rto * (1 + self._tries) + line_time:
                self._tries += 1
                if self._tries > MAX_TRIES:
                    self.log("no answer to re-sent frames: re-handshaking")
                    self._tries = 0
                    return out + self._handshake(now)
                out += self._resend(now)
        return out

    def _fill(self, now: float) -> list[p.Frame]:
        """New DATA frames, as many as the device's credit allows."""
        out = []
        in_flight = sum(sent.wire for sent in self.pending)
        end = self.owed + len(self.queue)
        while self.next_number < end:
            count = min(self.per_frame, end - self.next_number)
            if count < self.per_frame and not (self.input_ended or self.input_idle):
                break                                     # wait for a full frame while input keeps coming
            first = self.next_number
            frame = p.data(self.wire(first), np.stack([self._sample(n) for n in range(first, first + count)]))
            wire = len(p.encode(frame))
            if self.pending and in_flight + wire > self.caps.credit:
                break
            queued = sum(sent.line_bytes for sent in self.pending)
            sent = _Sent(first, count, frame, wire, now, now, 0, 1 + 2 * self.explain * count if self.explain else 0)
            sent.queued = queued + sent.line_bytes
            self.pending.append(sent)
            out.append(frame)
            in_flight += wire
            self.next_number += count
            self.stats.payload_bytes += max(0, first + count - max(first, self._sent_high)) * self.features
            self._sent_high = max(self._sent_high, first + count)
        return out

    def _sample(self, number: int) -> np.ndarray:
        if number < self.owed:
            return self.replay[number - (self.owed - len(self.replay))]
        return self.queue[number - self.owed]

    def _resend(self, now: float) -> list[p.Frame]:
        """Every unanswered frame again, in order (go-back-N)."""
        queued = 0
        for sent in self.pending:
            queued += sent.line_bytes
            sent.last_sent, sent.queued = now, queued
        self.stats.retransmissions += len(self.pending)
        return [sent.frame for sent in self.pending]

    def _check_done(self) -> None:
        if self.connected and self.input_ended and not self.queue and not self.pending and self._syncing is None:
            self.finished = True


def _tail(verdicts: Verdicts, start: int) -> Verdicts:
    """The verdicts from index ``start`` on."""
    def cut(values):
        return None if values is None else values[start:]
    return Verdicts(scores=verdicts.scores[start:], is_anomaly=verdicts.is_anomaly[start:],
                    predicted=verdicts.predicted[start:], warming_up=cut(verdicts.warming_up),
                    unit_score=cut(verdicts.unit_score), why=cut(verdicts.why))

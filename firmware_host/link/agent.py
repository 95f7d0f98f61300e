"""The device agent: what runs on the Raspberry Pi behind the serial line.

``DeviceAgent.handle(frame)`` is the whole protocol state machine (frames in, frames out, no
I/O), so tests can drive it directly; ``serve`` wraps it around a transport that it reopens
whenever the port goes away. Imports numpy, pyserial and the interpreter loader only.

Guarantees:
- it serves only a bundle whose model hash matches its manifest and whose golden vectors this
  machine reproduces; otherwise HELLO and DATA get an ERROR that says why. A served bundle that
  fails either at start-up is replaced by ``<bundle>.previous`` if that one passes both;
- exactly-once: DATA frames are applied in sample order; a re-sent frame that was already
  applied gets its cached RESULT and does not move the window state again;
- a model push is written to a staging folder, fsynced, hash-checked and self-tested before it
  replaces the served bundle by rename; until then, and if anything fails, the old model serves;
- only a port error (``PortError``) is survived, by reopening the port. A bug in the handler
  propagates and ends the process loudly, for systemd to restart it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from ..errors import BundleError, TinyadError
from ..explain import MAX_FEATURES, MAX_K
from ..manifest import GOLDEN_FILE, MANIFEST_FILE, MODEL_FILE
from ..runner import Detector
from . import protocol as p
from .metrics import AgentCounts, ScoreHistogram
from .transport import PortError, SerialTransport, Transport

DEFAULT_CREDIT = 4096          # bytes of DATA frames in flight: several frames, so the line never idles
DEFAULT_MAX_BATCH = 256        # samples per DATA frame
RESULT_CACHE = 256             # recent RESULT frames kept for re-sent DATA
PUSH_FILES = (MODEL_FILE, MANIFEST_FILE, GOLDEN_FILE)

Log = Callable[[str], None]
Opener = Callable[[Path], "tuple[Detector | None, str]"]


def _quiet(message: str) -> None:
    pass


class DeviceAgent:
    """``open_detector(path) -> (detector or None, status)`` loads and checks a bundle (hash and
    golden self-test); tests may give a stand-in."""

    def __init__(self, bundle: str | os.PathLike, *, credit: int = DEFAULT_CREDIT,
                 max_batch: int = DEFAULT_MAX_BATCH, log: Log = _quiet, runtime=None,
                 open_detector: Opener | None = None, outputs=None):
        self.bundle = Path(bundle)
        self.outputs = outputs                    # ``outputs.VerdictOutputs``: what it serves, to JSONL/MQTT
        self.credit = credit
        self.max_batch = max_batch
        self.log = log
        self.open_detector = open_detector or (lambda path: _open_detector(path, runtime))
        self.session = random.SystemRandom().randrange(1, 2**32)
        self.detector: Detector | None = None
        self.stream = None
        self.status = ""
        self.next_seq: int | None = None          # None until the host sends SYNC
        self.cache: OrderedDict[int, p.Frame] = OrderedDict()
        self.push: dict | None = None
        self.samples = 0
        self.explain = 0                          # features named per flagged verdict (the HELLO's K)
        self.counts = AgentCounts()               # what --metrics-port shows
        self.histogram: ScoreHistogram | None = None
        _recover_interrupted_swap(self.bundle, log)
        self._start()

    # -- model -------------------------------------------------------------------------------
    def _start(self) -> None:
        """Serve the bundle; if it fails its hash or self-test and ``<bundle>.previous`` passes
        both, roll back to the previous one (the failed one is kept as ``<bundle>.broken-<time>``)."""
        detector, status = self.open_detector(self.bundle)
        previous = _previous(self.bundle)
        if detector is None and previous.is_dir():
            fallback, fallback_status = self.open_detector(previous)
            if fallback is None:
                self.log(f"{previous} does not pass either ({fallback_status})")
            else:
                fallback.close()
                broken = _roll_back(self.bundle)
                self.log(f"{self.bundle} failed its check ({status}); rolled back to {previous}, which passes "
                         f"(the failed bundle is kept in {broken})")
                detector, status = self.open_detector(self.bundle)
        self._serve(detector, status)

    def _load(self) -> None:
        self._serve(*self.open_detector(self.bundle))

    def _serve(self, detector: Detector | None, status: str) -> None:
        if self.detector is not None:
            self.detector.close()
        self.detector = detector
        self.status = status
        self.stream = detector.stream() if detector else None
        if self.stream is not None:
            self.stream.explain = self.explain
        self.histogram = ScoreHistogram.for_bundle(detector.manifest) if detector else None
        self.next_seq = None
        self.cache.clear()
        self.log(f"serving {self.bundle} ({status})" if detector else f"NOT serving {self.bundle}: {status}")
        if self.outputs is not None:
            self.outputs.serving_detector(detector, status, source="device")

    @property
    def ready(self) -> bool:
        return self.detector is not None

    def caps(self) -> p.Caps:
        m = self.detector.manifest if self.detector else None
        return p.Caps(version=p.PROTOCOL_VERSION, session=self.session,
                      model_sha256=m.sha256 if m else "00" * 32, features=len(m.features) if m else 0,
                      window=m.window if m else 0,
                      input_scale=m.input_quantization.scale if m else 0.0,
                      input_zero_point=m.input_quantization.zero_point if m else 0,
                      max_batch=self.max_batch, credit=self._credit(len(m.features) if m else 1),
                      next_seq=self.next_seq if self.next_seq is not None else 0, ready=self.ready,
                      status=self.status)

    def _credit(self, features: int) -> int:
        """DATA bytes the host may have in flight. ``credit`` budgets the answers: each sample's
        RESULT item is 8 bytes, more than a narrow sample's DATA, so a 1-feature bundle gets an
        eighth of the DATA credit an 8-feature one gets and answers never queue for seconds. With
        explanations a flagged sample's answer grows by 2 bytes per named feature."""
        answer = p.RESULT_ITEM.itemsize + 2 * self.explain
        return max(512, self.credit * features // max(features, answer))

    # -- the state machine -------------------------------------------------------------------
    def handle(self, frame: p.Frame) -> list[p.Frame]:
        try:
            return self._handle(frame)
        except p.ProtocolError as exc:
            return [p.error(p.E_BAD_MESSAGE, f"{frame.name}: {exc}", frame.seq)]

    def _handle(self, frame: p.Frame) -> list[p.Frame]:
        kind = frame.type
        if kind == p.HELLO:
            version = p.hello_version(frame)
            if version != p.PROTOCOL_VERSION:
                self.log(f"refused a host speaking protocol {version}")
                return [p.error(p.E_VERSION, f"host speaks tinyad protocol {version}, this device speaks "
                                             f"{p.PROTOCOL_VERSION}; install the same tinyad version on both ends")]
            if not self.ready:
                return [p.Frame(p.CAPS, 0, self.caps().pack()),
                        p.error(p.E_SELF_TEST, self.status)]
            explain = min(p.hello_explain(frame), MAX_K)
            if explain and len(self.detector.manifest.features) > MAX_FEATURES:
                return [p.error(p.E_BAD_MESSAGE, f"explanations name at most {MAX_FEATURES} features; this "
                                                 f"bundle has {len(self.detector.manifest.features)}")]
            self.explain = self.stream.explain = explain
            return [p.Frame(p.CAPS, 0, self.caps().pack())]
        if kind == p.PING:
            return [p.Frame(p.PONG, frame.seq, frame.body)]
        if kind == p.SYNC:
            if not self.ready:
                return [p.error(p.E_SELF_TEST, self.status)]
            self.stream.reset()
            self.cache.clear()
            self.next_seq = frame.seq
            self.log(f"synced: next sample {frame.seq}")
            return [p.ack(frame.seq, self._credit(len(self.detector.manifest.features)))]
        if kind == p.DATA:
            return self._data(frame)
        if kind in (p.MODEL_BEGIN, p.MODEL_CHUNK, p.MODEL_END):
            return self._model(frame)
        return [p.error(p.E_BAD_MESSAGE, f"unexpected message {frame.name}", frame.seq)]

    def _data(self, frame: p.Frame) -> list[p.Frame]:
        if not self.ready:
            return [p.error(p.E_SELF_TEST, self.status, frame.seq)]
        if self.next_seq is None:
            return [p.error(p.E_NOT_SYNCED, "send SYNC before DATA", frame.seq)]
        cached = self.cache.get(frame.seq)
        if cached is not None:
            self.counts.resends += 1
            return [cached]                      # a re-sent frame: same answer, state untouched
        if frame.seq != self.next_seq:
            return [p.ack(self.next_seq)]   # a gap (or a frame too old to cache): say where we are
        samples = p.unpack_data(frame, len(self.detector.manifest.features))
        if len(samples) > self.max_batch:
            return [p.error(p.E_BAD_MESSAGE, f"{len(samples)} samples in one frame, at most {self.max_batch}",
                            frame.seq)]
        verdicts = self.stream.push(samples)
        reply = p.result(frame.seq, verdicts, self.detector.manifest.features)
        self.cache[frame.seq] = reply
        while len(self.cache) > RESULT_CACHE:
            self.cache.popitem(last=False)
        self.next_seq = (self.next_seq + len(samples)) & p.SEQ_MASK
        self.samples += len(samples)
        self.counts.samples += len(samples)
        self.counts.anomalies += int(verdicts.is_anomaly.sum())
        self.histogram.observe(verdicts)
        if self.outputs:
            self.outputs.write(frame.seq, verdicts)      # row = the sample's number on the link
        return [reply]

    # -- model push --------------------------------------------------------------------------
    def _model(self, frame: p.Frame) -> list[p.Frame]:
        if frame.type == p.MODEL_BEGIN:
            files, chunk = p.unpack_model_begin(frame)
            names = [name for name, _, _ in files]
            if sorted(names) != sorted(PUSH_FILES):
                return [p.error(p.E_MODEL, f"a push must carry {', '.join(PUSH_FILES)}, got {', '.join(names)}")]
            total = sum(size for _, size, _ in files)
            self.push = {"files": files, "chunk": chunk, "total": total, "data": bytearray(),
                         "chunks": (total + chunk - 1) // chunk}
            self.log(f"model push: {total} bytes in {self.push['chunks']} chunks")
            return [p.ack(0)]
        if self.push is None:
            return [p.error(p.E_MODEL, "no model push in progress (send MODEL_BEGIN first)", frame.seq)]
        push = self.push
        if frame.type == p.MODEL_CHUNK:
            received = len(push["data"]) // push["chunk"] if len(push["data"]) < push["total"] else push["chunks"]
            if frame.seq < received:
                return [p.ack(frame.seq + 1)]                 # a duplicate: acknowledge again
            if frame.seq > received:
                return [p.ack(received)]                      # a gap: ask for the missing chunk
            push["data"] += frame.body
            if len(push["data"]) > push["total"]:
                self.push = None
                return [p.error(p.E_MODEL, "more bytes than MODEL_BEGIN announced; push aborted")]
            return [p.ack(frame.seq + 1)]
        # MODEL_END
        try:
            self._install(push)
        except TinyadError as exc:
            self.log(f"model push refused: {exc}")
            return [p.error(p.E_MODEL, str(exc))]
        finally:
            self.push = None
        return [p.Frame(p.CAPS, 0, self.caps().pack())]

    def _install(self, push: dict) -> None:
        data = bytes(push["data"])
        if len(data) != push["total"]:
            raise BundleError(f"model push incomplete: {len(data)} of {push['total']} bytes arrived")
        parent = self.bundle.resolve().parent
        staging = Path(tempfile.mkdtemp(prefix=f".{self.bundle.name}.push-", dir=parent))
        try:
            offset = 0
            for name, size, digest in push["files"]:
                payload = data[offset:offset + size]
                offset += size
                if hashlib.sha256(payload).hexdigest() != digest:
                    raise BundleError(f"{name}: sha256 of the pushed bytes does not match the announced hash")
                with open(staging / name, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
            # Hash against the manifest and golden-vector self-test, before anything is replaced.
            candidate, status = self.open_detector(staging)
            if candidate is None:
                raise BundleError(f"the pushed bundle does not load here: {status}")
            candidate.close()
            _fsync_dir(staging)
            _swap_in(staging, self.bundle)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.log(f"model push installed into {self.bundle}")
        self._load()
        if not self.ready and _previous(self.bundle).is_dir():   # cannot happen after the check above
            broken = _roll_back(self.bundle)
            self.log(f"rolled back to the previous model; the failed one is in {broken}")
            self._load()


def _open_detector(bundle: Path, runtime) -> tuple[Detector | None, str]:
    try:
        detector = Detector(bundle, runtime=runtime)
    except TinyadError as exc:
        return None, str(exc)
    return detector, f"{detector.manifest.name}, sha256 {detector.manifest.sha256[:12]}, {detector.runtime.describe()}"


def _previous(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".previous")


def _swap_in(staging: Path, bundle: Path) -> None:
    """``staging`` becomes ``bundle``; the old bundle is kept as ``<bundle>.previous``."""
    previous = _previous(bundle)
    if previous.exists():
        shutil.rmtree(previous)
    if bundle.exists():
        os.rename(bundle, previous)
    os.rename(staging, bundle)
    _fsync_dir(bundle.resolve().parent)


def _roll_back(bundle: Path) -> Path:
    """``<bundle>.previous`` becomes ``bundle``; the failed one is kept, renamed: its new path."""
    broken = bundle.with_name(bundle.name + f".broken-{int(time.time())}")
    os.rename(bundle, broken)
    os.rename(_previous(bundle), bundle)
    _fsync_dir(bundle.resolve().parent)
    return broken


def _recover_interrupted_swap(bundle: Path, log: Log) -> None:
    """A power cut between the two renames of a swap leaves only ``.previous``: put it back."""
    previous = _previous(bundle)
    if not bundle.exists() and previous.is_dir():
        os.rename(previous, bundle)
        log(f"restored {bundle} from {previous} (an interrupted model swap)")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def serve(transport: Transport, agent: DeviceAgent, *, log: Log = _quiet,
          stop: Callable[[], bool] = lambda: False, reopen_every: float = 1.0) -> None:
    """Answer frames on ``transport`` until ``stop()`` is true. A port error (the port vanished,
    the host closed it) closes and reopens the same port, every ``reopen_every`` seconds until
    it is back; any other exception is a bug and propagates."""
    decoder = p.Decoder()
    waiting_logged = False
    while not stop():
        try:
            transport.reopen()
        except PortError as exc:
            if not waiting_logged:
                log(f"{exc}; retrying every {reopen_every:g} s")
                waiting_logged = True
            time.sleep(reopen_every)
            continue
        waiting_logged = False
        decoder.reset()
        log(f"listening on {transport.name} (protocol {p.PROTOCOL_VERSION}, session {agent.session:08x})")
        try:
            while not stop():
                for frame in decoder.feed(transport.read(4096, 0.2)):
                    replies = agent.handle(frame)
                    if replies:
                        transport.write(b"".join(p.encode(reply) for reply in replies))
                agent.counts.crc_errors = decoder.crc_errors
        except PortError as exc:     # the port vanished (cable pulled, host closed the pty): reopen it
            agent.counts.reconnects += 1
            log(f"port lost ({exc}); reopening")
            time.sleep(reopen_every)
    transport.close()


def serve_port(port: str, bundle: str | os.PathLike, *, baud: int = 115200, log: Log = _quiet,
               stop: Callable[[], bool] = lambda: False, credit: int = DEFAULT_CREDIT,
               max_batch: int = DEFAULT_MAX_BATCH, metrics_port: int | None = None, outputs=None) -> None:
    """Serve ``bundle`` on the serial port ``port`` until ``stop()`` is true; with ``metrics_port``,
    also its counters on http://0.0.0.0:PORT/metrics (``metrics.serve_metrics``)."""
    agent = DeviceAgent(bundle, credit=credit, max_batch=max_batch, log=log, outputs=outputs)
    if metrics_port is not None:
        from .metrics import serve_metrics

        serve_metrics(metrics_port, agent)
        log(f"metrics on http://0.0.0.0:{metrics_port}/metrics")
    serve(SerialTransport(port, baud, open_now=False), agent, log=log, stop=stop)

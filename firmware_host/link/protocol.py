"""The serial wire protocol: bytes <-> messages, and nothing else (no I/O, no clocks).

A frame on the wire is SLIP-framed (RFC 1055 bytes, as esptool frames its ROM loader
protocol): ``END payload END``, with END (0xC0) and ESC (0xDB) inside the payload escaped as
ESC 0xDC and ESC 0xDD. A receiver that joins mid-stream, or loses bytes, resynchronises at
the next END. The payload is::

    type u8 | seq u32 LE | length u16 LE | body (length bytes) | crc32 u32 LE

``crc32`` is ``binascii.crc32`` of everything before it. ``seq`` numbers samples in DATA and
RESULT (the first sample's number), chunks in MODEL_CHUNK and their ACKs, and is 0 elsewhere.
The frame layout never changes between protocol versions; message bodies may, which is why
HELLO and CAPS carry ``PROTOCOL_VERSION`` and a mismatch is refused with a readable ERROR.
See PROTOCOL.md for every body and a byte-level example.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import TinyadError
from ..scoring import Verdicts

# 2: RESULT scores are float32 (6 bytes a verdict, was 10). 3: RESULT items carry the unit score
# as a uint16 (8 bytes a verdict). 4: HELLO asks for K explained features; a RESULT names them for
# each flagged sample (``explain.py``).
PROTOCOL_VERSION = 4
MAGIC = b"TAD"
SEQ_MASK = 0xFFFFFFFF                   # sequence numbers count modulo 2^32 on both ends

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
HEADER = struct.Struct("<BIH")          # type, seq, body length
CRC = struct.Struct("<I")
MAX_BODY = 8192                         # bytes; a longer frame is garbage by definition

# Message types
HELLO, CAPS, SYNC = 0x01, 0x02, 0x03
DATA, RESULT, ACK = 0x10, 0x11, 0x12
MODEL_BEGIN, MODEL_CHUNK, MODEL_END = 0x20, 0x21, 0x22
PING, PONG = 0x30, 0x31
ERROR = 0x7F
NAMES = {HELLO: "HELLO", CAPS: "CAPS", SYNC: "SYNC", DATA: "DATA", RESULT: "RESULT", ACK: "ACK",
         MODEL_BEGIN: "MODEL_BEGIN", MODEL_CHUNK: "MODEL_CHUNK", MODEL_END: "MODEL_END", PING: "PING",
         PONG: "PONG", ERROR: "ERROR"}

# ERROR codes
E_VERSION, E_SELF_TEST, E_NOT_SYNCED, E_BAD_MESSAGE, E_MODEL, E_BUSY = 1, 2, 3, 4, 5, 6
ERROR_NAMES = {E_VERSION: "version mismatch", E_SELF_TEST: "self-test failed", E_NOT_SYNCED: "not synced",
               E_BAD_MESSAGE: "bad message", E_MODEL: "model push refused", E_BUSY: "busy"}

# RESULT flags. F_NO_UNIT: the verdicts carry no unit score at all (``Verdicts.unit_score`` is None);
# F_UNIT_NAN: this sample's unit score is NaN. Either way the uint16 unit field is 0.
F_ANOMALY, F_WARMING_UP, F_NO_UNIT, F_UNIT_NAN = 0x01, 0x02, 0x04, 0x08
# F_WHY: this sample's explanation (K feature indices and values) is in the RESULT's why section.
F_WHY = 0x10
# One verdict in a RESULT: score (float32), unit score (uint16), flags, class index; 8 bytes, packed.
RESULT_ITEM = np.dtype([("score", "<f4"), ("unit", "<u2"), ("flags", "u1"), ("cls", "u1")])
UNIT_STEPS = 65535                      # a unit score u in [0, 1] travels as round(u * 65535)
WHY_STEPS = 255                         # an explanation's value (explain.VALUE_STEPS) travels as one byte
CAPS_FIXED = struct.Struct("<3sBI32sHHdbHIIB")


class ProtocolError(TinyadError):
    """A frame or message body that does not follow this protocol."""


@dataclass
class Frame:
    type: int
    seq: int = 0
    body: bytes = b""

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"0x{self.type:02x}")


# -- framing -----------------------------------------------------------------------------------

def slip_escape(payload: bytes) -> bytes:
    return payload.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(bytes([END]), bytes([ESC, ESC_END]))


def slip_unescape(data: bytes) -> bytes:
    parts = data.split(bytes([ESC]))
    out = bytearray(parts[0])
    for part in parts[1:]:                 # each part follows an ESC, which must escape END or ESC
        if not part or part[0] not in (ESC_END, ESC_ESC):
            raise ProtocolError("bad SLIP escape")
        out.append(END if part[0] == ESC_END else ESC)
        out += part[1:]
    return bytes(out)


def encode(frame: Frame) -> bytes:
    """A frame as the bytes that go on the wire."""
    if len(frame.body) > MAX_BODY:
        raise ValueError(f"frame body of {len(frame.body)} bytes exceeds {MAX_BODY}")
    payload = HEADER.pack(frame.type, frame.seq & SEQ_MASK, len(frame.body)) + frame.body
    payload += CRC.pack(binascii.crc32(payload))
    return bytes([END]) + slip_escape(payload) + bytes([END])


def parse_payload(payload: bytes) -> Frame:
    """An unescaped payload -> Frame; ProtocolError on a short frame, bad length or bad CRC."""
    if len(payload) < HEADER.size + CRC.size:
        raise ProtocolError(f"short frame ({len(payload)} bytes)")
    kind, seq, length = HEADER.unpack_from(payload)
    if HEADER.size + length + CRC.size != len(payload):
        raise ProtocolError(f"length field {length} does not match a {len(payload)}-byte frame")
    (crc,) = CRC.unpack_from(payload, len(payload) - CRC.size)
    if binascii.crc32(payload[:-CRC.size]) != crc:
        raise ProtocolError("CRC mismatch")
    return Frame(kind, seq, bytes(payload[HEADER.size:HEADER.size + length]))


@dataclass
class Decoder:
    """Feed it bytes as they arrive; it returns whole, CRC-checked frames.

    Garbage between frames and frames that fail their CRC are counted and skipped; the
    decoder resynchronises at the next END byte. It never raises."""

    frames: int = 0
    crc_errors: int = 0
    malformed: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened: its bytes are gone); counts are kept."""
        self._buffer.clear()
        self._in_frame = False

    def feed(self, data: bytes) -> list[Frame]:
        out = []
        start = 0
        while True:
            end = data.find(END, start)
            if self._in_frame:
                self._buffer += data[start:] if end < 0 else data[start:end]
                if len(self._buffer) > 2 * (MAX_BODY + HEADER.size + CRC.size):
                    self.malformed += 1            # too long for a frame: drop it, wait for an END
                    self._buffer.clear()
                    self._in_frame = False
            if end < 0:
                return out
            if self._in_frame and self._buffer:
                frame = self._finish(bytes(self._buffer))
                if frame is not None:
                    out.append(frame)
            self._buffer.clear()
            self._in_frame = True
            start = end + 1

    def _finish(self, raw: bytes) -> Frame | None:
        try:
            frame = parse_payload(slip_unescape(raw))
        except ProtocolError as exc:
            if "CRC" in str(exc):
                self.crc_errors += 1
            else:
                self.malformed += 1
            return None
        self.frames += 1
        return frame


# -- message bodies ----------------------------------------------------------------------------

@dataclass
class Caps:
    """The device's answer to HELLO: who it is and what it takes."""

    version: int
    session: int              # random per agent start: a new value means the device lost its state
    model_sha256: str
    features: int
    window: int
    input_scale: float
    input_zero_point: int
    max_batch: int            # samples per DATA frame
    credit: int               # bytes of DATA frames the host may have unacknowledged
    next_seq: int             # the sample number the device expects next (after SYNC)
    ready: bool               # False: the self-test failed or no model; DATA is refused
    status: str = ""          # why not ready, or the interpreter's description

    def pack(self) -> bytes:
        status = self.status.encode("utf-8")[:1000]
        return CAPS_FIXED.pack(MAGIC, self.version, self.session, bytes.fromhex(self.model_sha256), self.features,
                               self.window, self.input_scale, self.input_zero_point, self.max_batch, self.credit,
                               self.next_seq & SEQ_MASK, int(self.ready)) + status

    @classmethod
    def unpack(cls, body: bytes) -> "Caps":
        if len(body) < 4 or body[:3] != MAGIC:
            raise ProtocolError("CAPS without the tinyad magic")
        if body[3] != PROTOCOL_VERSION:
            # Only the version byte is read from a foreign version: its layout may differ.
            return cls(body[3], 0, "00" * 32, 0, 0, 0.0, 0, 0, 0, 0, False, "")
        if len(body) < CAPS_FIXED.size:
            raise ProtocolError(f"CAPS body of {len(body)} bytes, expected at least {CAPS_FIXED.size}")
        (_, version, session, sha, features, window, scale, zero, max_batch, credit, next_seq,
         ready) = CAPS_FIXED.unpack_from(body)
        return cls(version, session, sha.hex(), features, window, scale, zero, max_batch, credit, next_seq,
                   bool(ready), body[CAPS_FIXED.size:].decode("utf-8", "replace"))


def hello(version: int = PROTOCOL_VERSION, explain: int = 0) -> Frame:
    """HELLO: the host's protocol version and (from version 4) how many features the device should
    name behind each flagged verdict (0: none)."""
    return Frame(HELLO, 0, MAGIC + bytes([version, explain]))


def hello_version(frame: Frame) -> int:
    if len(frame.body) not in (4, 5) or frame.body[:3] != MAGIC:
        raise ProtocolError("HELLO without the tinyad magic")
    return frame.body[3]


def hello_explain(frame: Frame) -> int:
    """The K a HELLO asks for (0 from a HELLO without the byte)."""
    return frame.body[4] if len(frame.body) > 4 else 0


def sync(next_seq: int) -> Frame:
    """Host -> device: reset the stream state; the next sample is number ``next_seq``."""
    return Frame(SYNC, next_seq)


def data(first_seq: int, samples) -> Frame:
    """DATA: quantized int8 samples (rows, features), one byte per feature."""
    samples = np.ascontiguousarray(samples, dtype=np.int8)
    return Frame(DATA, first_seq, struct.pack("<H", samples.shape[0]) + samples.tobytes())


def unpack_data(frame: Frame, features: int) -> np.ndarray:
    if len(frame.body) < 2:
        raise ProtocolError("DATA without a sample count")
    (count,) = struct.unpack_from("<H", frame.body)
    if len(frame.body) != 2 + count * features:
        raise ProtocolError(f"DATA holds {len(frame.body) - 2} bytes for {count} samples of {features} features")
    return np.frombuffer(frame.body, dtype=np.int8, offset=2).reshape(count, features)


def result(first_seq: int, verdicts: Verdicts, features: list[str] | None = None) -> Frame:
    """RESULT: per sample a float32 score, the unit score as uint16, flags and a class index; then,
    when ``verdicts.why`` names features for some samples (``features`` maps names to indices),
    a why section: K u8, and per such sample K x (feature index u8, value u8 in 1/255 steps)."""
    count = len(verdicts.scores)
    items = np.zeros(count, dtype=RESULT_ITEM)
    with np.errstate(over="ignore"):                 # a score beyond float32's range goes as inf
        items["score"] = np.asarray(verdicts.scores, dtype=np.float64).astype(np.float32)
    flags = np.asarray(verdicts.is_anomaly, dtype=bool) * F_ANOMALY
    if verdicts.warming_up is not None:
        flags = flags | np.asarray(verdicts.warming_up, dtype=bool) * F_WARMING_UP
    if verdicts.unit_score is None:
        flags = flags | F_NO_UNIT
    else:
        unit = np.asarray(verdicts.unit_score, dtype=np.float64)
        missing = np.isnan(unit)
        items["unit"] = np.rint(np.clip(np.where(missing, 0.0, unit), 0.0, 1.0) * UNIT_STEPS)
        flags = flags | missing * F_UNIT_NAN
    why = b""
    if verdicts.why is not None and any(verdicts.why):
        explained = [i for i, reasons in enumerate(verdicts.why) if reasons]
        flags[explained] |= F_WHY
        why = _why_section([verdicts.why[i] for i in explained], features)
    items["flags"] = flags
    items["cls"] = verdicts.predicted
    return Frame(RESULT, first_seq, struct.pack("<H", count) + items.tobytes() + why)


def _why_section(reasons: list[list], features: list[str]) -> bytes:
    index = {name: i for i, name in enumerate(features)}
    k = len(reasons[0])
    pairs = np.array([[(index[name], round(value * WHY_STEPS)) for name, value in row] for row in reasons],
                     dtype=np.uint8).reshape(len(reasons), k, 2)
    return bytes([k]) + pairs.tobytes()


def unpack_result(frame: Frame, features: list[str] | None = None) -> Verdicts:
    """A RESULT body back into the device's ``Verdicts``: float32 scores, the unit score exactly
    (a multiple of 1/65535, NaN or None as the device had it), flags and classes. With
    ``features`` (the host asked for explanations) ``why`` names them as the device did."""
    if len(frame.body) < 2:
        raise ProtocolError("RESULT without a count")
    (count,) = struct.unpack_from("<H", frame.body)
    end = 2 + count * RESULT_ITEM.itemsize
    if len(frame.body) < end:
        raise ProtocolError(f"RESULT holds {len(frame.body) - 2} bytes for {count} results")
    items = np.frombuffer(frame.body, dtype=RESULT_ITEM, offset=2, count=count)
    flags = items["flags"]
    explained = np.flatnonzero(flags & F_WHY)
    why = None if features is None else [[] for _ in range(count)]
    if len(explained):
        if features is None:
            raise ProtocolError("RESULT names features nobody asked for")
        if len(frame.body) < end + 1:
            raise ProtocolError("RESULT flags explained samples but has no why section")
        k = frame.body[end]
        if len(frame.body) != end + 1 + len(explained) * k * 2:
            raise ProtocolError(f"RESULT why section of {len(frame.body) - end} bytes for {len(explained)} "
                                f"samples of {k} features")
        pairs = np.frombuffer(frame.body, dtype=np.uint8, offset=end + 1).reshape(len(explained), k, 2)
        if pairs[:, :, 0].size and int(pairs[:, :, 0].max()) >= len(features):
            raise ProtocolError("RESULT names a feature index beyond the bundle's features")
        for row, named in zip(explained.tolist(), pairs.tolist()):
            why[row] = [[features[i], v / WHY_STEPS] for i, v in named]
    elif len(frame.body) != end:
        raise ProtocolError(f"RESULT holds {len(frame.body) - 2} bytes for {count} results")
    unit = None
    if not (flags & F_NO_UNIT).all():
        unit = np.where(flags & F_UNIT_NAN, np.nan, items["unit"] / UNIT_STEPS)
    return Verdicts(scores=items["score"].astype(np.float64), is_anomaly=(flags & F_ANOMALY) > 0,
                    predicted=items["cls"].astype(np.int64), warming_up=(flags & F_WARMING_UP) > 0,
                    unit_score=unit, why=why)


def ack(seq: int, credit: int = 0) -> Frame:
    """ACK: ``seq`` acknowledged (a model chunk), or the next sample expected; optional credit."""
    return Frame(ACK, seq, struct.pack("<I", credit))


def unpack_ack(frame: Frame) -> int:
    if len(frame.body) != 4:
        raise ProtocolError("ACK body must be 4 bytes")
    return struct.unpack("<I", frame.body)[0]


def error(code: int, text: str, seq: int = 0) -> Frame:
    return Frame(ERROR, seq, struct.pack("<H", code) + text.encode("utf-8")[:2000])


def unpack_error(frame: Frame) -> tuple[int, str]:
    if len(frame.body) < 2:
        raise ProtocolError("ERROR without a code")
    return struct.unpack_from("<H", frame.body)[0], frame.body[2:].decode("utf-8", "replace")


def model_begin(files: list[tuple[str, int, str]], chunk: int) -> Frame:
    """MODEL_BEGIN: the files that follow, in order, as (name, size, sha256), and the chunk size."""
    body = json.dumps({"files": [list(f) for f in files], "chunk": chunk}, separators=(",", ":")).encode()
    return Frame(MODEL_BEGIN, 0, body)


def unpack_model_begin(frame: Frame) -> tuple[list[tuple[str, int, str]], int]:
    try:
        spec = json.loads(frame.body.decode("utf-8"))
        files = [(str(n), int(s), str(h)) for n, s, h in spec["files"]]
        chunk = int(spec["chunk"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"MODEL_BEGIN body is not a file list ({exc})") from None
    if chunk <= 0 or chunk > MAX_BODY or any(size < 0 for _, size, _ in files):
        raise ProtocolError("MODEL_BEGIN with a bad chunk size or file size")
    return files, chunk


def model_chunk(index: int, payload: bytes) -> Frame:
    return Frame(MODEL_CHUNK, index, payload)


def model_end() -> Frame:
    return Frame(MODEL_END)


def describe_error(code: int, text: str) -> str:
    return f"device error {code} ({ERROR_NAMES.get(code, 'unknown')}): {text}"

"""The wire protocol alone: framing, CRC, message bodies, and a fuzzed decoder."""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.errors import TinyadError
from firmware_host.link import protocol as p
from firmware_host.scoring import Verdicts


def test_frames_round_trip_through_slip_with_every_special_byte():
    body = bytes([p.END, p.ESC, p.ESC_END, p.ESC_ESC, 0, 255]) * 3
    wire = p.encode(p.Frame(p.DATA, 123456, body))
    assert wire[0] == p.END and wire[-1] == p.END and p.END not in wire[1:-1]
    decoder = p.Decoder()
    (frame,) = decoder.feed(wire)
    assert (frame.type, frame.seq, frame.body) == (p.DATA, 123456, body)


def test_decoder_resynchronises_after_garbage_and_counts_a_bad_crc():
    good = p.encode(p.hello())
    damaged = bytearray(p.encode(p.sync(7)))
    damaged[4] ^= 0x01                                  # one bit flipped inside the frame
    decoder = p.Decoder()
    frames = decoder.feed(b"\x00garbage\xdb" + bytes(damaged) + good + b"\xc0\xc0" + good[:5])
    assert [f.type for f in frames] == [p.HELLO]
    assert decoder.crc_errors == 1
    assert decoder.feed(good[5:]) and decoder.frames == 2   # a frame split across reads


def test_any_split_of_the_byte_stream_gives_the_same_frames():
    frames = [p.hello(), p.data(7, np.array([[-64, -37, 0]], dtype=np.int8)), p.sync(2**32 - 1), p.error(3, "x")]
    wire = b"junk" + b"".join(p.encode(f) for f in frames)
    for size in range(1, len(wire) + 1):
        decoder = p.Decoder()
        got = [f for i in range(0, len(wire), size) for f in decoder.feed(wire[i:i + size])]
        assert [(f.type, f.seq, f.body) for f in got] == [(f.type, f.seq, f.body) for f in frames], size


def test_crc_is_binascii_crc32_of_header_and_body():
    wire = p.encode(p.Frame(p.PING, 9, b"abc"))
    payload = p.slip_unescape(wire[1:-1])
    assert int.from_bytes(payload[-4:], "little") == binascii.crc32(payload[:-4])


def test_data_and_result_bodies():
    samples = np.array([[-128, 0, 127], [5, -64, -37]], dtype=np.int8)   # -64 is END, -37 is ESC
    (frame,) = p.Decoder().feed(p.encode(p.data(40, samples)))
    assert frame.seq == 40 and (p.unpack_data(frame, 3) == samples).all()
    with pytest.raises(p.ProtocolError):
        p.unpack_data(frame, 4)
    back = p.unpack_result(p.result(40, _verdicts([0.25, float("nan")], [True, False], [1, 0], [False, True])))
    assert back.scores[0] == 0.25 and np.isnan(back.scores[1])
    assert back.is_anomaly.tolist() == [True, False] and back.predicted.tolist() == [1, 0]
    assert back.warming_up.tolist() == [False, True] and back.unit_score is None
    # A RESULT carries the float32 value the verdict file writes; past float32's range it is inf.
    back = p.unpack_result(p.result(41, _verdicts([0.1234567891234, 1e300], [False, True], [0, 1])))
    assert back.scores[0] == float(np.float32(0.1234567891234)) and back.scores[1] == float("inf")
    from firmware_host.csv_input import score_text
    assert score_text(back.scores[0]) == score_text(0.1234567891234) == "0.123457"


def _verdicts(scores, anomaly, classes, warming=None, unit=None) -> Verdicts:
    n = len(scores)
    return Verdicts(scores=np.asarray(scores, np.float64), is_anomaly=np.asarray(anomaly, bool),
                    predicted=np.asarray(classes, np.int64),
                    warming_up=np.asarray(warming if warming is not None else [False] * n, bool),
                    unit_score=None if unit is None else np.asarray(unit, np.float64))


def test_a_result_item_is_8_bytes_and_carries_every_unit_score_exactly():
    """Every multiple of 1/65535 comes back as the same float64; NaN stays NaN; None stays None."""
    assert p.RESULT_ITEM.itemsize == 8
    unit = np.arange(65536) / 65535
    unit[7] = np.nan
    frames = [p.result(i, _verdicts(np.zeros(len(part)), np.zeros(len(part)), np.zeros(len(part)), unit=part))
              for i, part in enumerate(np.array_split(unit, 80))]
    assert all(len(f.body) == 2 + 8 * len(part) for f, part in zip(frames, np.array_split(unit, 80)))
    back = np.concatenate([p.unpack_result(f).unit_score for f in frames])
    assert np.isnan(back[7]) and np.array_equal(np.delete(back, 7), np.delete(unit, 7))
    assert (np.delete(back, 7) == np.arange(65536)[np.arange(65536) != 7] / 65535).all()
    # A frame of NaN unit scores is an array of NaN, not None; a bundle without unit scores gives None.
    nan = p.unpack_result(p.result(0, _verdicts([0.1], [False], [0], unit=[np.nan]))).unit_score
    assert nan is not None and np.isnan(nan).all()
    assert p.unpack_result(p.result(0, _verdicts([0.1], [False], [0]))).unit_score is None


def test_protocol_errors_are_tinyad_errors():
    assert issubclass(p.ProtocolError, TinyadError)


def test_caps_round_trip_and_a_foreign_version_is_readable():
    caps = p.Caps(p.PROTOCOL_VERSION, 0xDEADBEEF, "ab" * 32, 10, 24, 0.0471, -3, 256, 4096, 77, True, "ok: ü")
    assert p.Caps.unpack(caps.pack()) == caps
    future = bytearray(caps.pack())
    future[3] = p.PROTOCOL_VERSION + 1
    assert p.Caps.unpack(bytes(future[:8])).version == p.PROTOCOL_VERSION + 1   # layout may differ; version reads


def test_model_begin_body_is_checked():
    files = [("model.tflite", 10, "aa"), ("manifest.json", 5, "bb")]
    assert p.unpack_model_begin(p.model_begin(files, 512)) == (files, 512)
    with pytest.raises(p.ProtocolError):
        p.unpack_model_begin(p.Frame(p.MODEL_BEGIN, 0, b"{not json"))
    with pytest.raises(p.ProtocolError):
        p.unpack_model_begin(p.model_begin(files, 0))


FRAMES = st.builds(lambda t, s, b: p.Frame(t, s, b), st.sampled_from(sorted(p.NAMES)),
                   st.integers(0, 2**32 - 1), st.binary(max_size=300))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_never_raise(data):
    decoder = p.Decoder()
    for frame in decoder.feed(data):
        assert frame.type in range(256)        # only CRC-valid frames come out


@settings(max_examples=400, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=5), st.data())
def test_fuzz_mutated_frames_give_protocol_errors_only(frames, draw):
    wire = bytearray(b"".join(p.encode(f) for f in frames))
    for _ in range(draw.draw(st.integers(0, 6))):
        action = draw.draw(st.sampled_from(["flip", "drop", "insert"]))
        at = draw.draw(st.integers(0, max(len(wire) - 1, 0)))
        if action == "flip" and wire:
            wire[at] ^= 1 << draw.draw(st.integers(0, 7))
        elif action == "drop" and wire:
            del wire[at]
        else:
            wire.insert(at, draw.draw(st.integers(0, 255)))
    decoder = p.Decoder()
    out = decoder.feed(bytes(wire))
    originals = {(f.type, f.seq, f.body) for f in frames}
    for frame in out:
        # Whatever survives is a frame that was sent (CRC-32 makes a false accept vanishingly rare)
        assert (frame.type, frame.seq, frame.body) in originals
        # and each body parser either parses it or raises ProtocolError, nothing else.
        for parse in (lambda f: p.Caps.unpack(f.body), p.unpack_error, p.unpack_ack, p.unpack_result,
                      p.unpack_model_begin, p.hello_version, lambda f: p.unpack_data(f, 3)):
            try:
                parse(frame)
            except p.ProtocolError:
                pass


@settings(max_examples=300, deadline=None)
@given(FRAMES)
def test_fuzz_body_parsers_on_arbitrary_frames(frame):
    for parse in (p.unpack_error, p.unpack_ack, p.unpack_result, p.unpack_model_begin, p.hello_version,
                  lambda f: p.unpack_data(f, 7), lambda f: p.Caps.unpack(f.body)):
        try:
            parse(frame)
        except p.ProtocolError:
            pass


def test_the_byte_level_example_in_PROTOCOL_md_is_what_the_encoder_sends():
    from pathlib import Path

    text = (Path(p.__file__).parent / "PROTOCOL.md").read_text()
    block = text.split("Host to device, DATA carrying samples 1000 and 1001")[1].split("```")[1]
    wire = bytes(int(tok, 16) for line in block.strip().splitlines() for tok in line.split("  ")[0].split())
    samples = np.array([[12, -64, 3], [0, -37, 127]], dtype=np.int8)
    assert wire == p.encode(p.data(1000, samples))
    block = text.split("Device to host, RESULT for the same two samples")[1].split("```")[1]
    wire = bytes(int(tok, 16) for line in block.strip().splitlines() for tok in line.split("  ")[0].split())
    example = _verdicts([0.5, float("nan")], [True, False], [1, 0], [False, True], unit=[0.75, float("nan")])
    assert wire == p.encode(p.result(1000, example))
    back = p.unpack_result(p.Decoder().feed(wire)[0])
    assert back.unit_score[0] == 49151 / 65535 and np.isnan(back.unit_score[1])
    line = text.split("The same from a bundle without unit scores")[1].split("`")[3]
    example.unit_score = None
    assert bytes.fromhex(line.replace(" ", "")) == p.encode(p.result(1000, example))
    hello_line = text.split(f"HELLO, version {p.PROTOCOL_VERSION}: `")[1].split("`")[0]
    assert bytes.fromhex(hello_line.replace(" ", "")) == p.encode(p.hello())

"""The wire protocol alone: framing, CRC, message bodies, and a fuzzed decoder."""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import protocol as p


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
    scores = np.array([0.25, float("nan")])
    back = p.unpack_result(p.result(40, scores, [p.F_ANOMALY, p.F_WARMING_UP], [1, 0]))
    assert back[0] == (0.25, p.F_ANOMALY, 1) and np.isnan(back[1][0]) and back[1][1:] == (p.F_WARMING_UP, 0)
    # A RESULT carries the float32 value the verdict file writes; past float32's range it is inf.
    back = p.unpack_result(p.result(41, [0.1234567891234, 1e300], [0, p.F_ANOMALY], [0, 1]))
    assert back[0][0] == float(np.float32(0.1234567891234)) and back[1][0] == float("inf")
    from firmware_host.csv_input import score_text
    assert score_text(back[0][0]) == score_text(0.1234567891234) == "0.123457"


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
    assert wire == p.encode(p.result(1000, [0.5, float("nan")], [p.F_ANOMALY, p.F_WARMING_UP], [1, 0]))
    hello_line = text.split(f"HELLO, version {p.PROTOCOL_VERSION}: `")[1].split("`")[0]
    assert bytes.fromhex(hello_line.replace(" ", "")) == p.encode(p.hello())

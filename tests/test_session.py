"""The host session state machines against the real DeviceAgent state machine, on a fake clock.

No threads, ports or sleeps: ``Line`` carries encoded frames between ``StreamSession`` (or
``PushSession``) and ``DeviceAgent.handle`` with each direction paced at a baud rate, and can
drop frames, cut the line, restart the agent or reopen the host's port at a given time. The
agent serves ``fake_device``'s model, whose verdicts depend on the samples before them, so
every test checks exactly-once, in-order verdicts equal to a local run's."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fake_device as fake
from firmware_host.errors import LinkError
from firmware_host.link import protocol as p
from firmware_host.link.agent import DeviceAgent
from firmware_host.link.push import PushSession
from firmware_host.link.session import HANDSHAKE_ATTEMPTS, MAX_TRIES, RETRANSMIT_TIMEOUT, StreamSession
from firmware_host.runner import replay_length

WRAP = 2**32


class Line:
    """A host session and a device agent joined by a simulated serial line on a fake clock."""

    def __init__(self, session, agent: DeviceAgent, *, baud: int = 115_200, delay: float = 0.002):
        self.session = session
        self.agent = agent
        self.baud = baud
        self.delay = delay
        self.now = 0.0
        self.drop = lambda direction, frame: False      # (direction "down"/"up", frame) -> lose it
        self.events: list[tuple[float, object]] = []    # (time, callable) run once when due
        self.in_flight = {"down": [], "up": []}         # (arrival time, wire bytes)
        self.free = {"down": 0.0, "up": 0.0}            # when each direction's line is free again
        self.decoders = {"down": p.Decoder(), "up": p.Decoder()}
        self.sent: list[p.Frame] = []                   # every frame the host sent
        self.data_in_flight_max = 0
        self._data_in_flight: dict[int, int] = {}

    def at(self, when: float, action) -> None:
        self.events.append((when, action))

    def send(self, direction: str, frames: list[p.Frame]) -> None:
        for frame in frames:
            wire = p.encode(frame)
            start = max(self.now, self.free[direction])
            self.free[direction] = start + len(wire) * 10 / self.baud
            if direction == "down":
                self.sent.append(frame)
                if frame.type == p.DATA:
                    self._data_in_flight[frame.seq] = len(wire)
                    self.data_in_flight_max = max(self.data_in_flight_max, sum(self._data_in_flight.values()))
            if not self.drop(direction, frame):
                self.in_flight[direction].append((self.free[direction] + self.delay, wire))

    def restart_agent(self) -> None:
        """The device agent process dies and systemd starts a new one (a new session)."""
        old = self.agent
        self.agent = DeviceAgent(old.bundle, credit=old.credit, max_batch=old.max_batch,
                                 open_detector=old.open_detector)
        self.in_flight["down"].clear()
        self.decoders["down"] = p.Decoder()

    def reconnect_host(self) -> None:
        """The host's port vanished and came back: what was in flight either way is lost."""
        self.in_flight = {"down": [], "up": []}
        self.decoders["up"].reset()
        self.send("down", self.session.on_reconnect(self.now))

    def run(self, feed=None, limit: float = 120.0, poll: float = 0.02) -> None:
        """Until the session finishes (or raises); ``feed()`` gives it input. Time jumps to the
        next arrival or event, and at most ``poll`` seconds, as the host driver reads."""
        if not self.session.started:
            self.send("down", self.session.start(self.now))
        while not self.session.finished:
            assert self.now < limit, "the session did not finish"
            due = [when for when, _ in self.events] + [when for d in self.in_flight.values() for when, _ in d]
            self.now = max(min(due + [self.now + poll]), self.now + 1e-4)
            for event in [e for e in self.events if e[0] <= self.now]:
                self.events.remove(event)
                event[1]()
            for direction in ("down", "up"):
                due = [wire for when, wire in self.in_flight[direction] if when <= self.now]
                self.in_flight[direction] = [(w, b) for w, b in self.in_flight[direction] if w > self.now]
                for frame in self.decoders[direction].feed(b"".join(due)):
                    if direction == "down":
                        self.send("up", self.agent.handle(frame))
                    else:
                        if frame.type == p.RESULT:
                            self._data_in_flight.pop(frame.seq, None)
                        self.send("down", self.session.on_frame(frame, self.now))
            if feed:
                feed()
            self.send("down", self.session.on_time(self.now))


def streaming(inputs: np.ndarray, *, window: int = 4, first_seq: int = 0, credit: int = 4096,
              max_batch: int = 256, give_up_after: float = 30.0, chunk: int = 100, agent_manifest=None):
    """A StreamSession, an agent and a Line, with a feed that hands over ``chunk`` samples at a time."""
    manifest = fake.manifest(window)
    delivered = []
    said = []
    session = StreamSession(manifest, lambda first, v: delivered.append((first, v)), first_seq=first_seq,
                            give_up_after=give_up_after, log=said.append)
    agent = DeviceAgent("unused", credit=credit, max_batch=max_batch,
                        open_detector=fake.opener(agent_manifest or manifest))
    line = Line(session, agent)
    batches = iter(np.array_split(inputs, max(1, len(inputs) // chunk)))

    def feed():
        while session.wants_input:
            batch = next(batches, None)
            if batch is None:
                session.end_input()
            else:
                session.add_samples(batch)

    return line, feed, delivered, manifest, said


def check(delivered, manifest, inputs) -> None:
    fake.assert_same(fake.joined(delivered), fake.reference(manifest, inputs))


def data_seqs(line: Line) -> list[int]:
    return [f.seq for f in line.sent if f.type == p.DATA]


def test_a_clean_line_keeps_within_the_credit_and_uses_it():
    inputs = fake.samples(3000)
    line, feed, delivered, manifest, _ = streaming(inputs)
    line.run(feed)
    check(delivered, manifest, inputs)
    stats = line.session.stats
    assert stats.samples == 3000 and stats.retransmissions == 0 and stats.resyncs == 0
    credit = line.session.caps.credit
    assert credit // 2 < line.data_in_flight_max <= credit
    assert line.now < 3000 * (3 + 8) * 10 / 115_200 * 1.25     # within 25 % of the line time both ways


@pytest.mark.parametrize("credit", [512, 1500, 20_000])
def test_in_flight_data_never_exceeds_the_credit(credit):
    inputs = fake.samples(1500, seed=credit)
    line, feed, delivered, manifest, _ = streaming(inputs, credit=credit)
    line.run(feed)
    check(delivered, manifest, inputs)
    assert line.data_in_flight_max <= line.session.caps.credit


def test_a_lost_result_resends_every_unanswered_frame_in_order_after_the_timeout():
    """Go-back-N: the device applied the frames; their re-sends get its cached answers."""
    inputs = fake.samples(2000, seed=1)
    line, feed, delivered, manifest, _ = streaming(inputs)
    lost = []

    def drop(direction, frame):
        if direction == "up" and frame.type == p.RESULT and frame.seq == 1020 and not lost:
            lost.append(line.now)
            return True
        return False

    line.drop = drop
    line.run(feed)
    check(delivered, manifest, inputs)
    seqs = data_seqs(line)
    again = seqs.index(1020, seqs.index(1020) + 1)        # the second time 1020 went out
    resent = seqs[again:again + line.session.stats.retransmissions]
    assert lost and resent == sorted(resent) and resent[0] == 1020 and line.session.stats.retransmissions >= 2
    assert line.agent.samples == 2000                      # applied once each, re-sends answered from cache


def test_a_lost_data_frame_is_resent_when_the_device_names_the_gap():
    """The device ACKs the sample it expects; the host re-sends at once, not after its timeout."""
    inputs = fake.samples(2000, seed=2)
    line, feed, delivered, manifest, _ = streaming(inputs)
    times = {}

    def drop(direction, frame):
        if direction == "down" and frame.type == p.DATA:
            times.setdefault(frame.seq, []).append(line.now)
            return frame.seq == 510 and len(times[frame.seq]) == 1
        return False

    line.drop = drop
    line.run(feed)
    check(delivered, manifest, inputs)
    first, second = times[510][:2]
    assert second - first < RETRANSMIT_TIMEOUT           # the gap ACK, not the timeout, caused it


def test_a_cut_line_re_handshakes_and_the_same_session_answers_from_its_cache():
    inputs = fake.samples(3000, seed=3)
    line, feed, delivered, manifest, said = streaming(inputs)
    line.drop = lambda direction, frame: 1.0 <= line.now < 12.0     # longer than the 6 re-sends
    line.run(feed)
    check(delivered, manifest, inputs)
    stats = line.session.stats
    assert stats.resyncs >= 1 and stats.replayed == 0 and stats.retransmissions > MAX_TRIES
    assert any("same session" in s for s in said)
    assert line.agent.samples == 3000


@pytest.mark.parametrize("window", [1, 4, 9])
def test_a_restarted_device_gets_the_replay_length_of_warm_up_samples(window):
    inputs = fake.samples(3000, seed=window)
    line, feed, delivered, manifest, said = streaming(inputs, window=window)
    line.at(1.0, line.restart_agent)
    line.run(feed)
    check(delivered, manifest, inputs)
    stats = line.session.stats
    assert stats.resyncs == 1 and stats.replayed == replay_length(manifest) == window - 1
    assert any("new session" in s for s in said)


def test_restarts_during_a_replay_replay_the_same_samples_again():
    inputs = fake.samples(3000, seed=4)
    line, feed, delivered, manifest, _ = streaming(inputs, window=6)
    line.at(1.0, line.restart_agent)
    line.at(1.015, line.restart_agent)        # while the host is handshaking or replaying
    line.at(2.0, line.restart_agent)
    line.run(feed)
    check(delivered, manifest, inputs)
    assert line.session.stats.replayed == 5 * line.session.stats.resyncs >= 10


def test_a_device_that_lost_its_state_in_the_same_session_is_synced_and_replayed():
    """ERROR "not synced" without a new session (the agent reloaded its model): replay anyway."""
    inputs = fake.samples(2000, seed=5)
    line, feed, delivered, manifest, _ = streaming(inputs, window=4)
    line.at(1.0, lambda: line.agent._load())
    line.run(feed)
    check(delivered, manifest, inputs)
    assert line.session.stats.replayed == 3


def test_a_reopened_host_port_re_handshakes_and_goes_on():
    inputs = fake.samples(3000, seed=6)
    line, feed, delivered, manifest, said = streaming(inputs)
    line.at(1.0, line.reconnect_host)
    line.run(feed)
    check(delivered, manifest, inputs)
    assert line.session.reconnects == 1 and line.session.stats.resyncs == 1


@pytest.mark.parametrize("first_seq", [WRAP - 100, WRAP - 1])
def test_sequence_numbers_wrap_past_2_32_on_both_ends(first_seq):
    inputs = fake.samples(3000, seed=7)
    line, feed, delivered, manifest, _ = streaming(inputs, first_seq=first_seq)
    # The first frame's answer (samples 2^32-100 ... 69, across the wrap) is lost once.
    line.drop = lambda direction, frame: direction == "up" and frame.type == p.RESULT and frame.seq == first_seq \
        and line.session.stats.retransmissions == 0
    line.run(feed)
    check(delivered, manifest, inputs)
    seqs = data_seqs(line)
    assert seqs[0] == first_seq and all(0 <= s < WRAP for s in seqs) and min(seqs) < 3000
    assert line.agent.next_seq == (first_seq + 3000) % WRAP
    assert line.session.stats.retransmissions > 0         # a re-send across the wrap


def test_a_restart_replays_across_the_2_32_wrap():
    inputs = fake.samples(3000, seed=8)
    line, feed, delivered, manifest, _ = streaming(inputs, first_seq=WRAP - 1000, window=6)
    line.at(1.2, line.restart_agent)          # about 1,200 samples in: past the wrap
    line.run(feed)
    check(delivered, manifest, inputs)
    syncs = [f.seq for f in line.sent if f.type == p.SYNC]
    assert syncs[0] == WRAP - 1000 and 0 < syncs[-1] < 3000 and line.session.stats.replayed == 5


def test_a_silent_device_fails_the_first_handshake_and_a_stalled_stream_gives_up():
    inputs = fake.samples(500)
    line, feed, _, _, _ = streaming(inputs)
    line.drop = lambda direction, frame: True
    with pytest.raises(LinkError, match=f"no CAPS .* after {HANDSHAKE_ATTEMPTS} HELLOs.*tinyad device"):
        line.run(feed)
    line, feed, delivered, _, _ = streaming(fake.samples(3000), give_up_after=5.0)
    line.drop = lambda direction, frame: line.now > 1.0
    with pytest.raises(LinkError, match="no progress for 5 s"):
        line.run(feed)
    assert 0 < len(delivered) and line.now < 1.0 + 5.0 + 0.5


def test_the_handshake_refuses_another_version_a_failed_self_test_and_another_model():
    session = StreamSession(fake.manifest(), lambda *a: None, port="/dev/ttyUSB9")
    session.start(0.0)
    future = bytearray(p.Caps(p.PROTOCOL_VERSION, 1, "00" * 32, 1, 1, 1.0, 0, 1, 1, 0, True).pack())
    future[3] = p.PROTOCOL_VERSION + 1
    with pytest.raises(LinkError, match=f"speaks tinyad protocol {p.PROTOCOL_VERSION + 1}.*same tinyad version"):
        session.on_frame(p.Frame(p.CAPS, 0, bytes(future)), 0.1)
    session = StreamSession(fake.manifest(), lambda *a: None)
    session.start(0.0)
    with pytest.raises(LinkError, match="refuses to serve.*self-test failed.*3 LSB"):
        session.on_frame(p.error(p.E_SELF_TEST, "outputs 3 LSB off"), 0.1)
    line, feed, _, _, _ = streaming(fake.samples(10), agent_manifest=fake.manifest(sha256="cd" * 32))
    with pytest.raises(LinkError, match="serves model cdcdcdcdcdcd.*this bundle is abababababab"):
        line.run(feed)


def test_an_empty_input_finishes_after_the_sync():
    line, feed, delivered, _, _ = streaming(np.zeros((0, fake.FEATURES), np.int8))
    line.run(feed)
    assert delivered == [] and line.session.stats.samples == 0


# -- model push ---------------------------------------------------------------------------------

@pytest.fixture
def pushing(tmp_path):
    """A PushSession for a fake bundle, and an agent serving tmp_path/bundle that installs it."""
    old, new = fake.manifest(sha256="ab" * 32), fake.manifest(sha256="cd" * 32)
    (tmp_path / "bundle").mkdir()

    def open_detector(path):
        manifest_file = path / "manifest.json"
        sha = json.loads(manifest_file.read_text())["sha256"] if manifest_file.exists() else old.sha256
        return fake.FakeDetector(new if sha == new.sha256 else old), "fake model"

    files = [("model.tflite", bytes(range(256)) * 20), ("manifest.json", json.dumps({"sha256": new.sha256}).encode()),
             ("golden.json", b"{}")]
    said = []
    session = PushSession(files, new.sha256, chunk=512, log=said.append)
    agent = DeviceAgent(tmp_path / "bundle", open_detector=open_detector)
    return Line(session, agent), tmp_path / "bundle", said


def test_a_push_installs_the_bundle(pushing):
    line, bundle, _ = pushing
    line.run()
    assert line.session.result["model_sha256"] == "cd" * 32 and line.session.result["resent"] == 0
    assert (bundle / "model.tflite").read_bytes() == bytes(range(256)) * 20
    assert (bundle.parent / "bundle.previous").is_dir()


def test_a_lost_chunk_is_sent_again_and_a_lost_install_answer_is_checked_with_a_hello(pushing):
    line, bundle, _ = pushing
    dropped = set()

    def drop(direction, frame):
        key = (direction, frame.type, frame.seq)
        if key in {("down", p.MODEL_CHUNK, 3), ("up", p.CAPS, 0)} and key not in dropped:
            dropped.add(key)
            return frame.type != p.CAPS or line.session._step == "end"
        return False

    line.drop = drop
    line.run()
    assert line.session.result["model_sha256"] == "cd" * 32 and line.session.result["resent"] >= 1
    assert ("up", p.CAPS, 0) in dropped and (bundle / "model.tflite").read_bytes() == bytes(range(256)) * 20


def test_a_device_restarted_mid_push_gets_the_push_from_the_start(pushing):
    line, bundle, said = pushing
    line.at(0.3, line.restart_agent)
    line.run()
    assert line.session.result["model_sha256"] == "cd" * 32
    assert any("starts over" in s for s in said)
    assert (bundle / "model.tflite").read_bytes() == bytes(range(256)) * 20


def test_a_refused_push_fails_with_the_devices_reason(pushing):
    line, bundle, _ = pushing
    line.session.specs[0] = ("model.tflite", line.session.specs[0][1], "00" * 32)     # a wrong hash
    with pytest.raises(LinkError, match="model push failed at MODEL_END.*model push refused.*sha256"):
        line.run()
    assert not (bundle / "model.tflite").exists()

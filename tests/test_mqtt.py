"""--mqtt against a real Mosquitto broker (``broker.py``): real `tinyad` processes publish, a real
subscriber with a persistent session (clean_session False, QoS 1) collects.

At QoS 1 a message may arrive twice after a reconnection (at-least-once): the subscriber keeps one
record per row and checks that any duplicate is identical."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker import Broker, free_port, mosquitto_path
from conftest import SLICE
from fault_relay import Relay
from firmware_host.errors import OutputError
from firmware_host.manifest import load_manifest
from firmware_host.outputs.mqtt import MqttSink, parse_url

TINYAD = [sys.executable, "-m", "firmware_host.cli"]


@pytest.fixture
def broker(tmp_path):
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    # Here, not at module level, so that the conftest hook sees this skip too.
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed: pip install 'tinyad[mqtt]'")
    with Broker(tmp_path / "broker") as running:
        yield running


class Subscriber:
    """A persistent-session QoS 1 subscriber to ``tinyad/#`` that reconnects by itself."""

    def __init__(self, broker: Broker, name: str, clean: bool = False):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=clean)
        self.client.reconnect_delay_set(1, 2)
        self.sessions: list[bool] = []           # per connection: did the broker still have our session?
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber was not subscribed within 10 s"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.sessions.append(bool(flags.session_present))
        client.subscribe("tinyad/#", qos=1)

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(payload, retain) for name, payload, retain in self.messages if name == topic]

    def records(self, topic: str) -> dict[int, dict]:
        """One record per row, each with its block's model_sha256 (a QoS 1 duplicate must be
        identical to the first copy)."""
        by_row: dict[int, dict] = {}
        for payload, _ in self.on(topic):
            block = json.loads(payload)
            assert sorted(block) == ["model_sha256", "verdicts"], f"not a verdict block: {sorted(block)}"
            for record in block["verdicts"]:
                assert "model_sha256" not in record               # the block carries it, once
                record["model_sha256"] = block["model_sha256"]
                assert by_row.setdefault(record["row"], record) == record, f"a different duplicate: {record}"
        return by_row

    def wait_for(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; got {len(self.messages)} messages"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _csv_records(path: Path) -> dict[int, dict]:
    with open(path, newline="") as handle:
        return {int(row["row"]): row for row in csv.DictReader(handle)}


def assert_equal_to_csv(records: dict[int, dict], csv_rows: dict[int, dict], sha256: str) -> None:
    assert sorted(records) == sorted(csv_rows), f"{len(records)} rows arrived of {len(csv_rows)}"
    for number, row in csv_rows.items():
        record = records[number]
        assert record["status"] == row["status"] and record["class"] == (row["class"] or None)
        assert record["score"] == (float(row["score"]) if row["score"] else None)
        assert record["unit_score"] == (float(row["unit_score"]) if row["unit_score"] else None)
        assert record["is_anomaly"] is (row["is_anomaly"] == "1")
        assert record["model_sha256"] == sha256
        if "why" in row:                         # --explain: the same features, the CSV's 3 decimals
            assert ";".join(f"{name}:{value:.3f}" for name, value in record["why"]) == row["why"]


def _slice_lines(count: int) -> list[bytes]:
    with gzip.open(SLICE, "rb") as handle:
        return handle.read().splitlines(keepends=True)[:count + 1]


def test_no_verdict_lost_when_the_broker_restarts_mid_stream(built_bundle, broker, tmp_path):
    """Rows go in live (a pipe fed a slice at a time); the broker is stopped and started again half
    way, while the publisher keeps scoring: every row's verdict reaches the subscriber, equal to the CSV's,
    the --explain features too."""
    subscriber = Subscriber(broker, "collector")
    lines = _slice_lines(3000)
    out = tmp_path / "verdicts.csv"
    publisher = subprocess.Popen([*TINYAD, "run", str(built_bundle), "--input", "-", "--output", str(out),
                                  "--mqtt", broker.url + "/tinyad", "--mqtt-id", "pi-1", "--explain", "2"],
                                 stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        publisher.stdin.write(lines[0])
        slices = [lines[1 + i:1 + i + 100] for i in range(0, 3000, 100)]
        for i, rows in enumerate(slices):
            publisher.stdin.write(b"".join(rows))
            publisher.stdin.flush()
            time.sleep(0.05)
            if i == len(slices) // 2:
                subscriber.wait_for(lambda: subscriber.on("tinyad/pi-1/verdicts"))
                broker.restart(pause=1.0)         # the publisher scores on while the broker is away
        publisher.stdin.close()
        stderr = publisher.stderr.read().decode()
        assert publisher.wait(60) == 0, stderr
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert "lost the MQTT broker" in stderr, stderr          # the restart did land mid-stream
    expected = _csv_records(out)
    assert len(expected) == 3000
    subscriber.wait_for(lambda: len(subscriber.records("tinyad/pi-1/verdicts")) >= 3000)
    # The subscriber's session (and what was queued for it) came back from the broker's disk.
    assert broker.database.exists() and subscriber.sessions[0] is False and subscriber.sessions[-1] is True
    assert_equal_to_csv(subscriber.records("tinyad/pi-1/verdicts"), expected, load_manifest(built_bundle).sha256)
    assert sum(bool(row["why"]) for row in expected.values()) > 100     # the explanations were compared
    assert len(subscriber.on("tinyad/pi-1/verdicts")) < 3000 / 10      # batched: not a publish per row
    subscriber.close()
    # A clean exit leaves "offline" as the retained status.
    late = Subscriber(broker, "late", clean=True)
    late.wait_for(lambda: late.on("tinyad/pi-1/status"))
    (payload, retained), = late.on("tinyad/pi-1/status")
    assert retained and json.loads(payload)["state"] == "offline"
    late.close()


def publishing_child(pid: int, timeout: float = 10.0) -> int:
    """The pid of the process `tinyad run --mqtt` forked to publish (``outputs/publisher.py``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError(f"tinyad run (pid {pid}) forked no publisher within {timeout:g} s")


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (a zombie counts: its parent was killed, not it) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_retained_status_and_the_last_will(built_bundle, broker):
    """The status is retained; when the device dies without a word (the whole process group is
    killed, as by a power cut), the broker's last will says "offline"."""
    publisher = subprocess.Popen([*TINYAD, "run", str(built_bundle), "--input", "-", "--output", os.devnull,
                                  "--mqtt", broker.url, "--mqtt-id", "pi-2"], stdin=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
    try:
        publisher.stdin.write(b"".join(_slice_lines(5)))
        publisher.stdin.flush()                    # the input stays open: the publisher lives on
        first = Subscriber(broker, "first", clean=True)
        first.wait_for(lambda: len(first.records("tinyad/pi-2/verdicts")) == 5)
        first.close()
        watcher = Subscriber(broker, "watcher", clean=True)        # subscribes after the status went out
        watcher.wait_for(lambda: watcher.on("tinyad/pi-2/status"))
        (payload, retained), = watcher.on("tinyad/pi-2/status")     # retained: it came on subscribing
        status = json.loads(payload)
        manifest = load_manifest(built_bundle)
        assert retained and status["state"] == "online" and status["device"] == "pi-2"
        assert status["model_sha256"] == manifest.sha256 and status["model"] == manifest.name
        assert status["self_test"]["passed"] is True and status["self_test"]["verdict_mismatches"] == 0
        assert "builtin kernels" in status["interpreter"]
        child = publishing_child(publisher.pid)
        os.killpg(publisher.pid, signal.SIGKILL)   # no goodbye: only the broker's last will can tell
        publisher.wait(10)
        assert gone(child)
        watcher.wait_for(lambda: len(watcher.on("tinyad/pi-2/status")) == 2)
        will = json.loads(watcher.on("tinyad/pi-2/status")[1][0])
        assert will["state"] == "offline" and will["model_sha256"] == manifest.sha256
        watcher.close()
    finally:
        if publisher.poll() is None:
            publisher.kill()
    late = Subscriber(broker, "late", clean=True)           # and it is what a newcomer sees
    late.wait_for(lambda: late.on("tinyad/pi-2/status"))
    assert json.loads(late.on("tinyad/pi-2/status")[0][0])["state"] == "offline"
    late.close()


def test_the_publisher_outlives_neither_a_killed_run_nor_ctrl_c(built_bundle, broker):
    """`run --mqtt` publishes from a forked child. Killed alone, the parent leaves the child an
    end of file: it says "offline" itself (no will needed) and exits. Ctrl-C (SIGINT to the
    process group) stops both as click stops a command ("Aborted!", exit code 1), the status offline."""
    watcher = Subscriber(broker, "watcher", clean=True)
    command = [*TINYAD, "run", str(built_bundle), "--input", "-", "--output", os.devnull, "--mqtt", broker.url]
    for device, stop in (("pi-4", "kill the parent"), ("pi-5", "ctrl-c")):
        publisher = subprocess.Popen(command + ["--mqtt-id", device], stdin=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        try:
            publisher.stdin.write(b"".join(_slice_lines(5)))
            publisher.stdin.flush()
            watcher.wait_for(lambda: len(watcher.records(f"tinyad/{device}/verdicts")) == 5)
            child = publishing_child(publisher.pid)
            if stop == "kill the parent":
                publisher.kill()
                assert publisher.wait(10) == -signal.SIGKILL
            else:
                os.killpg(publisher.pid, signal.SIGINT)
                stderr = publisher.communicate(timeout=20)[1].decode()
                assert publisher.returncode == 1 and stderr.strip().endswith("Aborted!"), stderr
                assert "Traceback" not in stderr, stderr
            assert gone(child), f"the publishing child {child} lives on after: {stop}"
            watcher.wait_for(lambda: len(watcher.on(f"tinyad/{device}/status")) == 2)
            statuses = [json.loads(payload) for payload, _ in watcher.on(f"tinyad/{device}/status")]
            assert [status["state"] for status in statuses] == ["online", "offline"], stop
        finally:
            if publisher.poll() is None:
                os.killpg(publisher.pid, signal.SIGKILL)
    watcher.close()


def test_on_one_cpu_run_publishes_in_process(built_bundle, broker, tmp_path):
    """Allowed a single CPU (its affinity mask), `run --mqtt` forks no publisher: a second process
    on the same core would only add its own costs. The records are the same."""
    watcher = Subscriber(broker, "watcher", clean=True)
    out = tmp_path / "v.csv"
    publisher = subprocess.Popen([*TINYAD, "run", str(built_bundle), "--input", "-", "--output", str(out),
                                  "--mqtt", broker.url, "--mqtt-id", "pi-7"], stdin=subprocess.PIPE,
                                 stderr=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    try:
        lines = _slice_lines(40)
        publisher.stdin.write(b"".join(lines))
        publisher.stdin.flush()
        watcher.wait_for(lambda: len(watcher.records("tinyad/pi-7/verdicts")) == 40)
        assert Path(f"/proc/{publisher.pid}/task/{publisher.pid}/children").read_text().split() == []
        publisher.stdin.close()
        stderr = publisher.stderr.read().decode()
        assert publisher.wait(30) == 0, stderr
    finally:
        if publisher.poll() is None:
            publisher.kill()
    assert_equal_to_csv(watcher.records("tinyad/pi-7/verdicts"), _csv_records(out), load_manifest(built_bundle).sha256)
    watcher.close()


def test_reconnects_back_off_exponentially():
    """A "broker" that accepts each TCP connection and closes it before any CONNACK: the sink (in
    the background, as the device agent's) tries again after 1 s, then after 2 s: the delay doubles
    (``RECONNECT_DELAYS``, up to 30 s). What it was given stays queued meanwhile."""
    import socket

    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed: pip install 'tinyad[mqtt]'")
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []

    def serve():
        while len(accepted) < 3:
            connection, _ = server.accept()
            accepted.append(time.monotonic())
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    logged: list[str] = []
    sink = MqttSink(f"mqtt://127.0.0.1:{server.getsockname()[1]}", "pi-6", {"model_sha256": "00" * 32},
                    wait=False, log=logged.append)
    try:
        sink.send('{"row":0}', 1, 0)
        thread.join(15)
        assert len(accepted) == 3, f"{len(accepted)} connection attempts in 15 s"
        gaps = [later - earlier for earlier, later in zip(accepted, accepted[1:])]
        for gap, delay in zip(gaps, (1, 2)):
            assert 0.9 * delay <= gap <= delay + 0.9, f"attempts {gaps} s apart, expected 1 then 2"
        assert sink.unacknowledged() == (1, 1)                  # still queued, not dropped
    finally:
        server.close()
        with pytest.raises(OutputError, match="1 of 1 messages"):
            sink.close(complete=False, timeout=0.1)


def test_unacknowledged_verdicts_are_an_error_naming_them(broker):
    sink = MqttSink(broker.url, "pi-3", {"model_sha256": "00" * 32})
    sink.send('{"row":0}\n', 1, 0)
    assert sink.close(timeout=5) is None                # acknowledged: a clean close
    sink = MqttSink(broker.url, "pi-3", {"model_sha256": "00" * 32})
    broker.stop()
    sink.send('{"row":0}\n{"row":1}\n', 2, 40)
    with pytest.raises(OutputError, match=r"1 of 1 messages \(2 verdicts, from row 40\) were not acknowledged"):
        sink.close(timeout=1)


def test_user_mistakes_are_one_line_errors(built_bundle, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"".join(_slice_lines(3)))
    base = [*TINYAD, "run", str(built_bundle), "--input", str(rows), "--output", str(tmp_path / "v.csv")]
    cases = [
        (["--mqtt", f"mqtt://127.0.0.1:{free_port()}"], "cannot reach the MQTT broker at mqtt://127.0.0.1:"),
        (["--mqtt", "http://localhost/x"], "expected mqtt://host[:port][/prefix]"),
        (["--mqtt", "mqtt://localhost:1883", "--mqtt-id", "a/b"], "--mqtt-id 'a/b'"),
    ]
    for extra, message in cases:
        done = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("Error: ")
    # paho-mqtt missing (an import that fails, as without the extra): the install hint.
    blocked = "import sys; sys.modules['paho'] = None; from firmware_host.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", blocked, *base[3:], "--mqtt", "mqtt://localhost"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "Error: --mqtt needs paho-mqtt, which is not installed: pip install 'tinyad[mqtt]'"
    assert parse_url("mqtt://user:p%40ss@broker.lan/site/a") == parse_url("mqtt://user:p%40ss@broker.lan:1883/site/a/")
    assert parse_url("mqtt://broker.lan").prefix == "tinyad" and parse_url("mqtt://h/x").password is None


def test_the_device_agent_publishes_what_it_serves(built_bundle, broker, tmp_path):
    """`tinyad device --mqtt --jsonl` behind a serial line (real ptys), `tinyad stream --mqtt` on the host:
    the device's records, the host's and the CSV agree row for row."""
    subscriber = Subscriber(broker, "ops")
    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"".join(_slice_lines(1500)))
    device_jsonl, log = tmp_path / "device.jsonl", tmp_path / "agent.log"
    with Relay() as relay:
        with open(log, "w") as stderr:
            agent = subprocess.Popen([*TINYAD, "device", "--port", relay.device_port, "--model", str(built_bundle),
                                      "--mqtt", broker.url, "--mqtt-id", "pi-dev", "--jsonl", str(device_jsonl)],
                                     stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while "listening on" not in log.read_text():
                assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            done = subprocess.run([*TINYAD, "stream", "--port", relay.host_port, "--model", str(built_bundle),
                                   "--input", str(rows), "--output", str(tmp_path / "s.csv"), "--quiet",
                                   "--mqtt", broker.url, "--mqtt-id", "host-1", "--jsonl", str(tmp_path / "h.jsonl")],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            subscriber.wait_for(lambda: len(subscriber.records("tinyad/pi-dev/verdicts")) == 1500)
        finally:
            agent.send_signal(signal.SIGTERM)              # systemd's stop: a clean exit says offline
            assert agent.wait(30) == 0, log.read_text()
    expected, sha = _csv_records(tmp_path / "s.csv"), load_manifest(built_bundle).sha256
    assert_equal_to_csv(subscriber.records("tinyad/pi-dev/verdicts"), expected, sha)
    assert_equal_to_csv(subscriber.records("tinyad/host-1/verdicts"), expected, sha)
    served = [json.loads(line) for line in device_jsonl.read_text().splitlines()]
    assert_equal_to_csv({record["row"]: record for record in served}, expected, sha)
    assert len(served) == 1500                                   # each sample served once
    statuses = [json.loads(payload) for payload, _ in subscriber.on("tinyad/pi-dev/status")]
    assert statuses[-1]["state"] == "offline" and statuses[-1]["source"] == "device"
    assert any(s["state"] == "online" and s.get("model_sha256") == sha and s["self_test"]["passed"] for s in statuses)
    subscriber.close()


SKIPPING_BROKER = """
import pytest

@pytest.fixture
def broker():
    pytest.skip("pretending mosquitto is missing")

def test_needs_a_broker(broker):
    pass
"""


def test_a_skipped_broker_test_fails_in_ci(tmp_path):
    """With env CI set (or /usr/sbin/mosquitto present) a broker test may not skip: the conftest
    hook makes the skip a failure, so CI cannot go green without the broker tests."""
    from test_skips_fail import PLUGIN

    (tmp_path / "conftest.py").write_text(PLUGIN)
    (tmp_path / "test_broker_skip.py").write_text(SKIPPING_BROKER)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, "CI": "1"})
    summary = done.stdout.splitlines()[-1]          # a skip in the fixture's setup becomes an error there
    assert done.returncode == 1 and "skipped although" in done.stdout and "skipped" not in summary, done.stdout

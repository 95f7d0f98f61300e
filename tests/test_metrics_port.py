"""`tinyad device --metrics-port`: the real agent on a pty, the real host streamer, a real HTTP
scrape of /metrics read with prometheus-client's own parser. The figures come from the agent's
counters; the test only compares them with what it streamed and what came back."""

from __future__ import annotations

import csv
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fault_relay import Relay, _raw_pty
from firmware_host.link import protocol as p
from firmware_host.manifest import load_manifest
from test_link import _rows, agent, stream, wait_for_text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metered_agent(port: str, bundle: Path, metrics_port: int, log_dir: Path):
    """The real ``tinyad device`` serving its metrics on ``metrics_port``."""
    return agent(port, bundle, log_dir=log_dir, options=("--metrics-port", str(metrics_port)))


def scrape(port: int) -> dict[str, float]:
    """Every sample on /metrics, by name (histogram buckets as name{le})."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (f"{{{sample.labels['le']}}}" if "le" in sample.labels else "")
            values[key] = sample.value
    return values


def _streamed(bundle: Path, rows: Path, out: Path, relay_kwargs: dict, tmp_path: Path) -> tuple[dict, list]:
    metrics_port = _free_port()
    with Relay(**relay_kwargs) as relay, metered_agent(relay.device_port, bundle, metrics_port, tmp_path):
        before = scrape(metrics_port)
        assert before["tinyad_samples_total"] == 0 and before["tinyad_self_test_passed"] == 1
        done = stream(relay.host_port, bundle, rows, out)
        assert done.returncode == 0, done.stderr
        after = scrape(metrics_port)
    with open(out, newline="") as handle:
        return after, list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sdn_rows(tmp_path_factory) -> Path:
    return _rows(tmp_path_factory.mktemp("rows") / "sdn.csv", 2000)


def test_a_scrape_counts_what_was_streamed(built_bundle, sdn_rows, tmp_path):
    metrics, verdicts = _streamed(built_bundle, sdn_rows, tmp_path / "out.csv", {}, tmp_path)
    anomalies = sum(row["is_anomaly"] == "1" for row in verdicts)
    assert len(verdicts) == 2000 and 0 < anomalies < 2000
    assert metrics["tinyad_samples_total"] == 2000
    assert metrics["tinyad_anomalies_total"] == anomalies
    assert metrics["tinyad_self_test_passed"] == 1
    assert metrics["tinyad_link_crc_errors_total"] == 0 and metrics["tinyad_resends_total"] == 0
    # The histogram: one observation per verdict, the anomalies (score > threshold) above the
    # threshold's bucket edge and the rest at or below it.
    assert metrics["tinyad_score_count"] == 2000
    assert metrics["tinyad_score_bucket{+Inf}"] == 2000
    threshold = load_manifest(built_bundle).threshold
    assert metrics[f"tinyad_score_bucket{{{float(threshold)!r}}}"] == 2000 - anomalies
    assert metrics["tinyad_score_sum"] == pytest.approx(sum(float(row["score"]) for row in verdicts), rel=1e-5)


def _frames(master: int, decoder: p.Decoder, wanted: int, timeout: float = 10.0) -> list[p.Frame]:
    """Read frames from the pty's host end until ``wanted`` have come."""
    found, deadline = [], time.monotonic() + timeout
    while len(found) < wanted:
        assert time.monotonic() < deadline, f"only {found} after {timeout:g} s"
        if select.select([master], [], [], 0.1)[0]:
            found += decoder.feed(os.read(master, 4096))
    return found


def test_crc_errors_resends_and_reconnects_are_counted_frame_by_frame(built_bundle, tmp_path):
    """The host end of a raw pty speaks to the agent frame by frame: one HELLO with a flipped bit
    (a CRC error), a good HELLO, SYNC, a DATA frame and the same DATA frame again (a re-send the
    agent answers from its cache); then the pty is closed under the agent (a reconnect)."""
    features = len(load_manifest(built_bundle).features)
    master, slave = _raw_pty()
    metrics_port = _free_port()
    decoder = p.Decoder()
    with metered_agent(os.ttyname(slave), built_bundle, metrics_port, tmp_path) as (_, log_path):
        damaged = bytearray(p.encode(p.hello()))
        damaged[5] ^= 0x04
        os.write(master, bytes(damaged) + p.encode(p.hello()))
        assert [f.type for f in _frames(master, decoder, 1)] == [p.CAPS]
        os.write(master, p.encode(p.sync(0)))
        assert [f.type for f in _frames(master, decoder, 1)] == [p.ACK]
        samples = np.random.default_rng(0).integers(-128, 128, size=(40, features)).astype(np.int8)
        data = p.encode(p.data(0, samples))
        os.write(master, data)
        (first,) = _frames(master, decoder, 1)
        os.write(master, data)
        (again,) = _frames(master, decoder, 1)
        assert first.type == p.RESULT and again.body == first.body
        flagged = int(p.unpack_result(first).is_anomaly.sum())
        assert 0 < flagged < 40            # random int8 rows: most are far from normal, not all
        metrics = scrape(metrics_port)
        assert metrics["tinyad_link_crc_errors_total"] == 1 and metrics["tinyad_resends_total"] == 1
        assert metrics["tinyad_samples_total"] == 40 and metrics["tinyad_anomalies_total"] == flagged
        assert metrics["tinyad_reconnects_total"] == 0
        os.close(master)
        os.close(slave)
        wait_for_text(log_path, "reopening")
        assert scrape(metrics_port)["tinyad_reconnects_total"] == 1


def _device(bundle: Path, metrics_port: int, *python: str) -> subprocess.CompletedProcess:
    """`tinyad device` on a fresh pty, expected to stop at once with an error."""
    master, slave = os.openpty()
    try:
        return subprocess.run([sys.executable, *python, "device", "--port", os.ttyname(slave), "--model",
                               str(bundle), "--metrics-port", str(metrics_port)],
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(master)
        os.close(slave)


def test_metrics_without_prometheus_client_or_with_a_taken_port_is_a_one_line_error(built_bundle):
    # prometheus-client absent: a None entry in sys.modules makes its import fail as if not installed.
    without = ["-c", "import sys; sys.modules['prometheus_client'] = None; sys.argv[0] = 'tinyad'; "
                     "from firmware_host.cli import main; main()"]
    done = _device(built_bundle, _free_port(), *without)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Error: --metrics-port needs prometheus-client: pip install 'tinyad[metrics]'" in done.stderr
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _device(built_bundle, port, "-m", "firmware_host.cli")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"Error: --metrics-port {port}: cannot listen" in done.stderr


def test_the_score_histogram_buckets_around_the_threshold_or_in_tenths_of_the_unit_score():
    from types import SimpleNamespace

    from firmware_host.link.metrics import ScoreHistogram
    from firmware_host.scoring import Verdicts

    raw = ScoreHistogram.for_bundle(SimpleNamespace(adaptive={}, threshold=2.0))
    assert raw.name == "score" and raw.edges.tolist() == [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0]
    verdicts = Verdicts(scores=np.array([0.1, 2.0, 2.5, 100.0, 7.0, np.nan]), is_anomaly=np.zeros(6, bool),
                        predicted=np.zeros(6, int), warming_up=np.array([False, False, False, False, True, False]))
    raw.observe(verdicts)
    buckets = dict(raw.buckets())
    assert buckets["0.5"] == 1 and buckets["2.0"] == 2 and buckets["3.0"] == 3 and buckets["+Inf"] == 4
    assert raw.total == pytest.approx(104.6)          # neither the warming-up row nor a NaN score counts
    # A threshold of 0 or below still gets increasing edges, the threshold one of them.
    negative = ScoreHistogram.for_bundle(SimpleNamespace(adaptive={}, threshold=-1.0))
    assert np.all(np.diff(negative.edges) > 0) and -1.0 in negative.edges.tolist()
    unit = ScoreHistogram.for_bundle(SimpleNamespace(adaptive={"span": 3}, threshold=5.0))
    unit.observe(Verdicts(scores=np.array([9.0, 9.0]), is_anomaly=np.zeros(2, bool), predicted=np.zeros(2, int),
                          warming_up=None, unit_score=np.array([0.05, 0.95])))
    assert unit.name == "unit_score" and dict(unit.buckets())["0.1"] == 1 and dict(unit.buckets())["1.0"] == 2

"""What the device agent counts, and a Prometheus ``/metrics`` endpoint that shows it.

``AgentCounts`` and ``ScoreHistogram`` are plain numbers the agent updates on its own code paths
(``agent.DeviceAgent`` and ``agent.serve``); they need nothing beyond numpy. ``serve_metrics``
exposes them over HTTP through prometheus-client, imported only then (``pip install
'tinyad[metrics]'``). Values are read at scrape time, so a scrape costs the agent nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import TinyadError

# Bucket edges of the raw-score histogram, as offsets from the bundle's threshold in units of
# |threshold| (1 where it is 0): the threshold itself is an edge, with finer edges below it
# (normal traffic) and doubling ones above (how far past it the anomalies go). For a positive
# threshold t the edges are t x (0.25, 0.5, 0.75, 1, 1.5, 2, 4, 8, 16).
SCORE_EDGES = (-0.75, -0.5, -0.25, 0.0, 0.5, 1.0, 3.0, 7.0, 15.0)
UNIT_EDGES = tuple(round(0.1 * i, 1) for i in range(1, 11))     # a [0, 1] score: tenths


class MetricsError(TinyadError):
    """The metrics endpoint cannot start: prometheus-client missing, or the port taken."""


@dataclass
class AgentCounts:
    """Counters since the agent started (Prometheus counters: they only go up)."""

    samples: int = 0          # samples scored (warm-up replays after a host reconnect included)
    anomalies: int = 0        # of those, flagged anomalous
    crc_errors: int = 0       # frames dropped for a bad CRC
    resends: int = 0          # DATA frames the host sent again, answered from the result cache
    reconnects: int = 0       # times the agent's port vanished and was reopened


class ScoreHistogram:
    """Counts of the verdicts' scores in fixed buckets. A bundle with adaptive scoring counts its
    [0, 1] unit score (tenths); any other its raw score, in buckets around its threshold."""

    def __init__(self, edges, name: str):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.name = name
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)    # the last: above every edge
        self.total = 0.0

    @classmethod
    def for_bundle(cls, manifest) -> "ScoreHistogram":
        if manifest.adaptive:
            return cls(UNIT_EDGES, "unit_score")
        unit = abs(manifest.threshold) or 1.0
        return cls([manifest.threshold + unit * offset for offset in SCORE_EDGES], "score")

    def observe(self, verdicts) -> None:
        values = verdicts.unit_score if self.name == "unit_score" else verdicts.scores
        values = np.asarray(values, dtype=np.float64)
        if verdicts.warming_up is not None:
            values = values[~np.asarray(verdicts.warming_up, dtype=bool)]
        values = values[np.isfinite(values)]
        # Prometheus buckets are "less than or equal": side="left" puts a value on an edge below it.
        self.counts += np.bincount(np.searchsorted(self.edges, values, side="left"), minlength=len(self.counts))
        self.total += float(values.sum())

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (upper edge, count) pairs, ending with +Inf, as Prometheus wants them."""
        cumulative = np.cumsum(self.counts).tolist()
        edges = [_edge_text(edge) for edge in self.edges.tolist()] + ["+Inf"]
        return list(zip(edges, cumulative))


def _edge_text(edge: float) -> str:
    return repr(float(edge)) if math.isfinite(edge) else "+Inf"


def serve_metrics(port: int, agent, address: str = "0.0.0.0"):
    """Serve the agent's counters on http://ADDRESS:PORT/metrics from a daemon thread; returns the
    HTTP server. Raises MetricsError if prometheus-client is missing or the port cannot be bound."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    except ImportError:
        raise MetricsError("--metrics-port needs prometheus-client: pip install 'tinyad[metrics]'") from None

    class AgentCollector:
        def collect(self):
            counts = agent.counts
            for name, value, text in (
                    ("tinyad_samples", counts.samples, "Samples scored by the device agent."),
                    ("tinyad_anomalies", counts.anomalies, "Samples flagged anomalous."),
                    ("tinyad_link_crc_errors", counts.crc_errors, "Frames dropped for a bad CRC-32."),
                    ("tinyad_resends", counts.resends, "DATA frames the host re-sent (answered from cache)."),
                    ("tinyad_reconnects", counts.reconnects, "Times the serial port vanished and was reopened.")):
                yield CounterMetricFamily(name, text, value=value)
            yield GaugeMetricFamily("tinyad_self_test_passed",
                                    "1 if the served bundle passed its hash and golden-vector self-test, else 0.",
                                    value=1.0 if agent.ready else 0.0)
            histogram = agent.histogram
            if histogram is not None:
                yield HistogramMetricFamily(f"tinyad_{histogram.name}",
                                            "Verdict scores (unit_score: adaptive [0, 1] level; score: raw, "
                                            "buckets around the bundle's threshold).",
                                            buckets=histogram.buckets(), sum_value=histogram.total)

    registry = CollectorRegistry()
    registry.register(AgentCollector())
    try:
        started = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise MetricsError(f"--metrics-port {port}: cannot listen on {address}:{port} ({exc.strerror})") from None
    return started[0] if isinstance(started, tuple) else started

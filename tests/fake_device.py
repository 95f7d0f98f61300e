"""A stand-in model for the device agent, so the link's state machines run in milliseconds.

``DeviceAgent(..., open_detector=opener(manifest))`` serves ``FakeDetector``: its stream gives
each sample a verdict that depends on the sample and on the ``replay_length(manifest)`` samples
before it since the last reset, so a replay that rebuilt the wrong state, a sample applied
twice or one skipped shows up as a different verdict. ``reference`` is what a fresh stream
gives on the whole input at once: the analogue of ``tinyad run``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from firmware_host.manifest import Manifest, Quantization, Scaler
from firmware_host.runner import replay_length
from firmware_host.scoring import Verdicts

FEATURES = 3


def manifest(window: int = 4, sha256: str = "ab" * 32) -> Manifest:
    names = [f"f{i}" for i in range(FEATURES)]
    return Manifest(name="fake", detector="lstm" if window > 1 else "ae", features=names,
                    scaler=Scaler([0.0] * FEATURES, [False] * FEATURES, [0.0] * FEATURES, [1.0] * FEATURES, 5.0),
                    input_quantization=Quantization(0.05, 0), output_quantization=Quantization(0.05, 0),
                    threshold=0.5, classes=["normal", "anomaly"], normal_class="normal", sha256=sha256,
                    input_shape=[1, window, FEATURES] if window > 1 else [1, FEATURES],
                    output_shape=[1, FEATURES], window=window)


def samples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(count, FEATURES), dtype=np.int8)


class FakeStream:
    def __init__(self, manifest: Manifest):
        self.window = manifest.window
        self.past: deque[int] = deque(maxlen=replay_length(manifest))     # a code per past sample

    def reset(self) -> None:
        self.past.clear()

    def push(self, inputs: np.ndarray) -> Verdicts:
        codes = (np.asarray(inputs, dtype=np.int8).astype(np.int64) @ np.array([1, 3, 7])).tolist()
        values, warming = [], []
        for code in codes:
            warming.append(len(self.past) < self.window - 1)
            values.append((sum((i + 1) * c for i, c in enumerate(self.past)) + 11 * code) % 65536)
            self.past.append(code)
        values, warming = np.array(values, dtype=np.float64), np.array(warming, dtype=bool)
        scores = np.where(warming, np.nan, values / 65536)
        flagged = ~warming & (values >= 32768)
        return Verdicts(scores=scores, is_anomaly=flagged, predicted=flagged.astype(np.int64), warming_up=warming,
                        unit_score=np.where(warming, np.nan, values / 65535))


class FakeDetector:
    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def stream(self) -> FakeStream:
        return FakeStream(self.manifest)

    def close(self) -> None:
        pass


def opener(manifest: Manifest):
    """An ``open_detector`` for DeviceAgent that serves the fake model whatever the path."""
    return lambda path: (FakeDetector(manifest), "fake model")


def reference(manifest: Manifest, inputs: np.ndarray) -> Verdicts:
    return FakeStream(manifest).push(inputs)


def joined(parts: list[tuple[int, Verdicts]]) -> Verdicts:
    """Verdicts delivered as (first_row, verdicts) in order, checked to be contiguous from row 0."""
    expected = 0
    for first, verdicts in parts:
        assert first == expected, f"verdicts for row {first} arrived when row {expected} was next"
        expected += len(verdicts.scores)
    return Verdicts(scores=np.concatenate([v.scores for _, v in parts]),
                    is_anomaly=np.concatenate([v.is_anomaly for _, v in parts]),
                    predicted=np.concatenate([v.predicted for _, v in parts]),
                    warming_up=np.concatenate([v.warming_up for _, v in parts]),
                    unit_score=np.concatenate([v.unit_score for _, v in parts]))


def assert_same(got: Verdicts, want: Verdicts) -> None:
    """Equal as the link carries them: float32 scores, unit scores exactly, flags and classes."""
    assert len(got.scores) == len(want.scores)
    np.testing.assert_array_equal(got.scores, want.scores.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(got.unit_score, want.unit_score)
    np.testing.assert_array_equal(got.is_anomaly, want.is_anomaly)
    np.testing.assert_array_equal(got.predicted, want.predicted)
    np.testing.assert_array_equal(got.warming_up, want.warming_up)

"""Library-level tests of the run side: quantization, preprocessing, scoring, manifest, loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_host import quant, scoring
from firmware_host.errors import BundleError, InterpreterUnavailable
from firmware_host.interpreter import load_runtime
from firmware_host.manifest import Manifest, Scaler, load_manifest
from firmware_host.preprocess import scale_rows


def test_quantize_rounds_half_away_from_zero_and_saturates():
    q = quant.quantize([0.25, -0.25, 0.75, 100.0, -100.0], scale=0.5, zero_point=0)
    assert q.tolist() == [1, -1, 2, 127, -128]
    assert q.dtype == np.int8
    back = quant.dequantize(q, 0.5, 0)
    assert back.tolist() == [0.5, -0.5, 1.0, 63.5, -64.0]


def test_quantize_roundtrip_error_is_at_most_half_a_step():
    values = np.linspace(-3, 3, 1001)
    scale, zp = 6 / 255, -1
    error = np.abs(quant.dequantize(quant.quantize(values, scale, zp), scale, zp) - values)
    assert error.max() <= scale / 2 + 1e-6


def test_scale_rows_imputes_logs_standardises_and_clips():
    scaler = Scaler(impute=[5.0, 0.0], log1p=[False, True], mean=[1.0, 0.0], std=[2.0, 1.0], clip=3.0)
    rows = np.array([[np.nan, np.e - 1], [1001.0, -(np.e - 1)]])
    out = scale_rows(rows, scaler)
    np.testing.assert_allclose(out, [[2.0, 1.0], [3.0, -1.0]], rtol=1e-6)
    with pytest.raises(ValueError):
        scale_rows(np.zeros((1, 3)), scaler)


def test_ae_score_is_mean_squared_residual_and_classifier_score_is_one_minus_p_normal():
    residual = np.array([[1.0, -1.0], [0.0, 0.0]])
    assert scoring.score("ae", None, residual).tolist() == [1.0, 0.0]
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    s = scoring.score("vae_dnn", None, probs, normal_index=0)
    np.testing.assert_allclose(s, [0.1, 0.8])
    v = scoring.decide("vae_dnn", s, probs, threshold=0.5)
    assert v.is_anomaly.tolist() == [False, True] and v.predicted.tolist() == [0, 2]


def test_manifest_rejects_other_schema_versions(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(BundleError, match="schema_version 99"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_manifest_checks_scaler_lengths(built_bundle):
    data = json.loads((built_bundle / "manifest.json").read_text())
    data["scaler"]["mean"] = data["scaler"]["mean"][:-1]
    with pytest.raises(BundleError, match="scaler.mean"):
        Manifest.from_dict(data)


def test_interpreter_loader_prefers_ai_edge_litert_and_explains_unknown_names(monkeypatch):
    monkeypatch.delenv("TINYAD_INTERPRETER", raising=False)
    assert load_runtime().name == "ai_edge_litert"
    with pytest.raises(InterpreterUnavailable, match="choose one of"):
        load_runtime("tflite_micro")

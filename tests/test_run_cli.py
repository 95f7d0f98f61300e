"""tinyad run / info / bench on a real bundle through the real interpreter."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.manifest import GOLDEN_FILE, MODEL_FILE, load_manifest

from conftest import SLICE


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_verdicts(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_gives_one_verdict_per_row_equal_to_the_build_path(built_bundle, tmp_path):
    out = tmp_path / "verdicts.csv"
    result = invoke("run", built_bundle, "--input", SLICE, "--output", out)
    assert result.exit_code == 0, result.output
    verdicts = read_verdicts(out)
    with gzip.open(SLICE, "rt") as handle:
        rows = sum(1 for _ in handle) - 1
    assert len(verdicts) == rows == 6000
    assert [int(v["row"]) for v in verdicts] == list(range(rows))

    # The build side's path: pandas loader -> scaler -> quantize -> same interpreter.
    from firmware_host.interpreter import load_runtime
    from firmware_host.preprocess import scale_rows
    from firmware_host.runner import TFLiteModel, model_scores
    from toolchain.datasets import load_dataset

    manifest = load_manifest(built_bundle)
    data = load_dataset("sdn_ddos", SLICE.parent, SLICE.name)
    raw = data.features[manifest.features].to_numpy(dtype=np.float64)
    model = TFLiteModel(built_bundle / MODEL_FILE, load_runtime())
    scores, *_ = model_scores(model, scale_rows(raw, manifest.scaler), manifest.detector)
    run_scores = np.array([float(v["score"]) for v in verdicts])
    np.testing.assert_allclose(run_scores, scores, rtol=1e-5, atol=1e-9)
    assert [v["is_anomaly"] == "1" for v in verdicts] == list(scores > manifest.threshold)
    # The detector is worth something on this data: most attack rows are flagged.
    flagged = np.array([v["is_anomaly"] == "1" for v in verdicts])
    truth = data.classes != data.normal_class
    assert np.mean(flagged == truth) > 0.85


def test_run_reads_stdin(built_bundle):
    text = "pktcount,bytecount\n"  # written below with every column the bundle needs
    manifest = load_manifest(built_bundle)
    columns = sorted({manifest.one_hot.get(f, [f])[0] for f in manifest.features})
    text = ",".join(columns) + "\n" + ",".join("1" if c != "Protocol" else "UDP" for c in columns) + "\n"
    result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", "-"], input=text)
    assert result.exit_code == 0, result.output
    lines = [l for l in result.stdout.splitlines() if l]
    assert lines[0] == "row,status,score,unit_score,is_anomaly,class" and len(lines) == 2


def test_run_refuses_a_changed_model(bundle_copy, tmp_path):
    model = bundle_copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    result = invoke("run", bundle_copy, "--input", SLICE)
    assert result.exit_code != 0
    assert "sha256" in result.output and "does not match" in result.output


def test_run_refuses_when_golden_vectors_disagree(bundle_copy):
    golden_path = bundle_copy / GOLDEN_FILE
    golden = json.loads(golden_path.read_text())
    golden["outputs"] = [[max(-128, min(127, v + 5)) for v in row] for row in golden["outputs"]]
    golden_path.write_text(json.dumps(golden))
    result = invoke("run", bundle_copy, "--input", SLICE)
    assert result.exit_code != 0
    assert "self-test failed" in result.output and "5 LSB" in result.output
    assert "ai_edge_litert" in result.output or "tflite_runtime" in result.output or "tensorflow" in result.output
    skipped = invoke("run", bundle_copy, "--input", SLICE, "--skip-self-test")
    assert skipped.exit_code == 0
    assert "self-test skipped" in skipped.stderr


def test_one_lsb_difference_is_tolerated(bundle_copy):
    golden_path = bundle_copy / GOLDEN_FILE
    golden = json.loads(golden_path.read_text())
    golden["outputs"][0][0] = max(-128, min(127, golden["outputs"][0][0] + 1))
    golden_path.write_text(json.dumps(golden))
    assert invoke("run", bundle_copy, "--input", SLICE, "--output", bundle_copy / "v.csv").exit_code == 0


def test_run_names_missing_columns(built_bundle, tmp_path):
    path = tmp_path / "few.csv"
    path.write_text("a,b\n1,2\n")
    result = invoke("run", built_bundle, "--input", path)
    assert result.exit_code != 0 and "missing input column" in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""   # no verdict header before the refusal


def test_run_names_line_and_column_of_a_bad_cell(built_bundle, tmp_path):
    manifest = load_manifest(built_bundle)
    columns = sorted({manifest.one_hot.get(f, [f])[0] for f in manifest.features})
    numeric = next(c for c in columns if c != "Protocol")
    good = ",".join("1" if c != "Protocol" else "TCP" for c in columns)
    bad = ",".join("oops" if c == numeric else ("1" if c != "Protocol" else "TCP") for c in columns)
    path = tmp_path / "bad.csv"
    path.write_text(",".join(columns) + "\n" + good + "\n" + bad + "\n")
    result = invoke("run", built_bundle, "--input", path)
    assert result.exit_code != 0
    assert f"line 3, column '{numeric}'" in result.output and "'oops' is not a number" in result.output


@pytest.mark.parametrize("problem", ["missing_input", "not_a_bundle", "empty_input"])
def test_run_user_mistakes_exit_non_zero_without_traceback(built_bundle, tmp_path, problem):
    if problem == "missing_input":
        args = ("run", built_bundle, "--input", tmp_path / "nope.csv")
    elif problem == "not_a_bundle":
        args = ("run", tmp_path, "--input", SLICE)
    else:
        (tmp_path / "empty.csv").write_text("")
        args = ("run", built_bundle, "--input", tmp_path / "empty.csv")
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output


def test_info_text_and_json(built_bundle):
    text = invoke("info", built_bundle)
    assert text.exit_code == 0, text.output
    assert "vae_dnn" in text.output and "runs here" in text.output and "int8" in text.output
    data = json.loads(invoke("info", built_bundle, "--json").output)
    for key in ("schema_version", "features", "scaler", "input_quantization", "output_quantization", "threshold",
                "detector", "metrics", "size_bytes", "weight_bytes", "sha256", "recipe", "versions"):
        assert key in data
    assert set(data["metrics"]) >= {"float", "int8"}


def test_bench_measures_both_models(built_bundle):
    result = invoke("bench", built_bundle, "--invokes", 200, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for name in ("int8", "float"):
        assert data[name]["invoke_us_p50"] > 0 and data[name]["invoke_us_p99"] >= data[name]["invoke_us_p50"]
    assert 0 < data["size_ratio_int8_to_float"] < 2
    assert data["int8"]["batched_rows_per_second"] > 0 and data["batched_throughput_ratio_int8_to_float"] > 0
    assert data["peak_rss_bytes"] > 0
    assert data["self_test"]["passed"] and data["self_test"]["max_abs_diff_lsb"] == 0


def test_every_command_has_help():
    for name in main.list_commands(None):
        result = invoke(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        command = main.get_command(None, name)
        assert command.help and len(command.help.strip()) > 20, name


def test_fallback_interpreter_passes_self_test_and_gives_identical_verdicts(built_bundle, tmp_path):
    """TINYAD_INTERPRETER=tensorflow takes the last-resort loader path; verdicts must not change."""
    import os
    import subprocess
    import sys

    outputs = {}
    for name in ("ai_edge_litert", "tensorflow"):
        out = tmp_path / f"{name}.csv"
        env = {**os.environ, "TINYAD_INTERPRETER": name}
        result = subprocess.run([sys.executable, "-m", "firmware_host.cli", "run", str(built_bundle), "--input",
                                 str(SLICE), "--output", str(out)], env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert name in result.stderr.splitlines()[-1]
        outputs[name] = [(v["row"], v["is_anomaly"]) for v in read_verdicts(out)]
    assert outputs["ai_edge_litert"] == outputs["tensorflow"]


def test_a_run_that_fails_midway_leaves_no_verdict_file(built_bundle, tmp_path):
    manifest = load_manifest(built_bundle)
    columns = sorted({manifest.one_hot.get(f, [f])[0] for f in manifest.features})
    good = ",".join("1" if c != "Protocol" else "UDP" for c in columns)
    bad = ",".join("x" if c != "Protocol" else "UDP" for c in columns)
    path = tmp_path / "late_bad.csv"
    path.write_text(",".join(columns) + "\n" + (good + "\n") * 600 + bad + "\n")
    out = tmp_path / "verdicts.csv"
    result = invoke("run", built_bundle, "--input", path, "--output", out, "--batch-rows", 100)
    assert result.exit_code == 1 and "line 602" in result.output
    assert list(tmp_path.iterdir()) == [path]
    result = invoke("run", built_bundle, "--input", SLICE, "--output", tmp_path / "no" / "such" / "dir.csv")
    assert result.exit_code == 1 and "cannot write the verdicts" in result.output


def test_run_refuses_a_float_model_even_with_a_matching_hash(bundle_copy):
    from firmware_host.manifest import FLOAT_MODEL_FILE, MANIFEST_FILE, sha256_file

    (bundle_copy / MODEL_FILE).write_bytes((bundle_copy / FLOAT_MODEL_FILE).read_bytes())
    data = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    data["sha256"] = sha256_file(bundle_copy / MODEL_FILE)
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(data))
    result = invoke("run", bundle_copy, "--input", SLICE)
    assert result.exit_code == 1 and "not a full-integer model" in result.output

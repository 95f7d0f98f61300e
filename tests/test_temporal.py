"""Temporal detectors end to end: real tf_keras training, real int8 conversion, the real
interpreter, and the run side's ring buffer against what verify computed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.manifest import REPORT_FILE, load_manifest

from conftest import KINDS, TEMPORAL_RECIPE, WINDOW


@pytest.mark.parametrize("kind", KINDS)
def test_each_temporal_detector_is_fully_int8_with_a_fused_lstm(temporal_bundles, kind):
    from toolchain.convert import float_ops, op_list

    recipe, bundle, _ = temporal_bundles[kind]
    manifest = load_manifest(bundle)
    assert manifest.detector == kind and manifest.window == WINDOW
    assert manifest.input_shape == [1, WINDOW, len(manifest.features)]
    ops = op_list((bundle / "model.tflite").read_bytes())
    names = {op.name for op in ops}
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in names
    assert float_ops(ops) == [] and not names & {"DEQUANTIZE", "QUANTIZE"}
    report = json.loads((bundle / REPORT_FILE).read_text())
    assert report["quantize"]["ops"] == [op.name for op in ops]
    scorers = {row["scorer"]: row for row in report["compare"]}
    assert {f"{kind} (float)", f"{kind} (int8)", "isolation_forest", "one_class_svm", "windowed_gaussian"} <= set(scorers)
    assert scorers[f"{kind} (int8)"]["p50_us"] > 0 and scorers[f"{kind} (int8)"]["bytes"] == manifest.size_bytes["int8"]
    if kind == "cnn_lstm_attn":
        assert {"CONV_2D", "SOFTMAX", "BATCH_MATMUL"} <= names   # conv features and attention weights
        assert manifest.score_params["mode"] in ("classifier", "forecaster")
    if kind == "ae_lstm":
        p = manifest.score_params
        assert p["re_width"] == WINDOW * len(manifest.features)
        assert p["a"] + p["b"] == pytest.approx(1.0) and p["re_std"] > 0 and p["pe_std"] > 0
        assert report["train"]["score_fit"]["grid"]


def _test_runs(recipe, data_root: Path, folder: Path) -> list[tuple[int, Path]]:
    """The raw test rows of a recipe's split, in time order, as CSVs ``tinyad run`` reads: one per
    contiguous run of rows (a block split's test part has gaps, and no window spans a gap), each
    with its first row's position within the part."""
    from toolchain.prepare import prepare

    prep = prepare(recipe, data_root)
    index = np.asarray(prep.parts["test"])
    starts = [0] + [i for i in range(1, len(index)) if index[i] != index[i - 1] + 1] + [len(index)]
    runs = []
    for n, (a, b) in enumerate(zip(starts, starts[1:])):
        path = folder / f"test_{n}.csv"
        prep.dataset.features.iloc[index[a:b]].to_csv(path, index=False)
        runs.append((a, path))
    return runs


@pytest.mark.parametrize("kind", KINDS)
def test_run_on_the_test_rows_equals_verify_row_for_row(temporal_bundles, shared_data, tmp_path, kind):
    recipe, bundle, work = temporal_bundles[kind]
    _assert_run_equals_verify(recipe, bundle, work, shared_data, tmp_path)


def _assert_run_equals_verify(recipe, bundle: Path, work: Path, data_root: Path, tmp_path: Path) -> None:
    """`tinyad run` on the test part's raw rows (one stream per contiguous run) gives, row for
    row, the scores and verdicts verify computed."""
    positions, run_scores, run_flags = [], [], []
    for first, path in _test_runs(recipe, data_root, tmp_path):
        out = path.with_suffix(".verdicts.csv")
        result = CliRunner().invoke(main, ["run", str(bundle), "--input", str(path), "--output", str(out),
                                           "--batch-rows", "37"])
        assert result.exit_code == 0, result.output
        with open(out) as handle:
            verdicts = list(csv.DictReader(handle))
        # The first W-1 rows warm the ring buffer up: an explicit status, no score, no guess.
        warm = min(WINDOW - 1, len(verdicts))
        assert [v["status"] for v in verdicts[:warm]] == ["warming_up"] * warm
        assert all(v["score"] == "" and v["is_anomaly"] == "0" for v in verdicts[:warm])
        assert all(v["status"] == "scored" for v in verdicts[warm:])
        positions += range(first + warm, first + len(verdicts))
        run_scores += [float(v["score"]) for v in verdicts[warm:]]
        run_flags += [v["is_anomaly"] == "1" for v in verdicts[warm:]]
    saved = np.load(work / "test_scores.npz")
    assert list(saved["positions"]) == positions
    np.testing.assert_allclose(run_scores, saved["int8"], rtol=1e-5, atol=1e-6)
    assert (np.array(run_flags) == (saved["int8"] > load_manifest(bundle).threshold)).all()


def test_cnn_lstm_attn_as_a_classifier_where_labels_exist(shared_data, tmp_path):
    """Real TON_IoT Weather rows, normal and attack runs taken in file order and laid out in
    alternating runs so that a block split gives every part both classes: the CNN-LSTM-attention
    model is trained as a windowed classifier, converts fully int8, and runs as verify scored."""
    import pandas as pd

    from toolchain.convert import float_ops, op_list
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    frame = pd.read_csv(shared_data / "ton_iot" / "Train_Test_IoT_Weather.csv.gz", encoding="utf-8-sig")
    columns = ["temperature", "pressure", "humidity", "label"]
    normal, attack = frame[frame.label == 0][columns], frame[frame.label == 1][columns]
    runs = [part.iloc[i:i + 150] for i in range(0, 1500, 150) for part in (normal, attack)]
    pd.concat(runs).to_csv(tmp_path / "weather_runs.csv", index=False)
    recipe_path = tmp_path / "classifier.toml"
    recipe_path.write_text(
        "name = 't_classifier'\nseed = 5\n"
        "[data]\nloader = 'csv'\npath = 'weather_runs.csv'\nrelative_to = 'recipe'\nlabel = 'label'\n"
        "[split]\nmethod = 'blocks'\nblocks = 20\n"
        "[features]\ntop_k = 0\nsweep = []\n"
        f"[detector]\nkind = 'cnn_lstm_attn'\nmode = 'classifier'\nwindow = {WINDOW}\nlstm_units = 8\n"
        "conv_filters = 8\nclassifier = [8]\nactivation = 'relu6'\nepochs = 4\nbatch_size = 64\n"
        "[quantize]\nrepresentative_rows = 150\ngolden_rows = 12\n[verify]\nmax_f1_drop = 1.0\n")
    recipe = load_recipe(recipe_path)
    bundle, work = tmp_path / "bundle", tmp_path / "work"
    report = build(recipe, tmp_path, bundle, work)
    manifest = load_manifest(bundle)
    assert manifest.score_params["mode"] == "classifier" and manifest.output_shape == [1, 2]
    ops = op_list((bundle / "model.tflite").read_bytes())
    assert float_ops(ops) == [] and {"CONV_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM", "SOFTMAX"} <= {o.name for o in ops}
    assert report["verify"]["models"]["int8"]["roc_auc"] > 0.6      # it learned something from the labels
    _assert_run_equals_verify(recipe, bundle, work, tmp_path, tmp_path)


def test_temporal_bundle_refuses_pointwise_predict(temporal_bundles):
    from firmware_host.errors import BundleError
    from firmware_host.runner import Detector

    _, bundle, _ = temporal_bundles["lstm"]
    with Detector(bundle) as detector:
        with pytest.raises(BundleError, match="stream"):
            detector.predict(np.zeros((3, len(detector.manifest.features))))
        stream = detector.stream()
        first = stream.push(np.zeros((WINDOW - 1, len(detector.manifest.features)), np.int8))
        assert first.warming_up.all() and np.isnan(first.scores).all()
        second = stream.push(np.zeros((2, len(detector.manifest.features)), np.int8))
        assert not second.warming_up.any() and np.isfinite(second.scores).all()
        stream.reset()
        assert stream.push(np.zeros((1, len(detector.manifest.features)), np.int8)).warming_up.all()


def test_random_split_is_refused_for_temporal_detectors(tmp_path):
    from firmware_host.errors import RecipeError
    from toolchain.recipe import load_recipe

    text = TEMPORAL_RECIPE.format(kind="lstm", rows=100, window=4).replace('method = "time"', 'method = "random"')
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(RecipeError, match="consecutive rows"):
        load_recipe(tmp_path / "r.toml")


def test_part_windows_score_the_last_row_of_each_window():
    from toolchain.windows import all_rows_in, part_windows

    rows = np.arange(10, dtype=np.float32).reshape(5, 2)
    windows, positions = part_windows(rows, 3)
    assert windows.shape == (3, 3, 2) and list(positions) == [2, 3, 4]
    assert (windows[0] == rows[0:3]).all() and (windows[-1] == rows[2:5]).all()
    assert list(all_rows_in(np.array([1, 1, 1, 0, 1], bool), 3)) == [True, False, False]
    assert part_windows(rows, 6)[0].shape == (0, 6, 2)


def test_prefix_split_learns_from_the_rows_before_the_first_anomaly():
    from toolchain.split import split_indices

    classes = np.array(["n"] * 10 + ["a", "a"] + ["n"] * 4)
    time = np.arange(16)[::-1].astype(float)      # rows stored newest first
    parts = split_indices(classes[::-1], time, "prefix", (0.75, 0.25, 0.0), 0, "n")
    # In time order the first anomaly is the 11th row: 10 normal rows precede it, split 3:1.
    order = np.argsort(time)
    assert sorted(parts["train"]) == sorted(order[:8]) and sorted(parts["validation"]) == sorted(order[8:10])
    assert sorted(parts["test"]) == sorted(order[10:])


def test_probation_split_reads_no_label_and_follows_nab():
    from firmware_host.errors import RecipeError
    from toolchain.split import split_indices

    time = np.arange(2000)[::-1].astype(float)     # rows stored newest first
    labelled = np.where(np.arange(2000) % 97 == 5, "a", "n")
    parts = split_indices(labelled, time, "probation", (0.8, 0.2, 0.0), 0, "n")
    blind = split_indices(np.full(2000, "n"), time, "probation", (0.8, 0.2, 0.0), 0, "n")
    assert all(np.array_equal(parts[k], blind[k]) for k in parts)           # labels change nothing
    order = np.argsort(time)
    assert sorted(parts["train"]) == sorted(order[:240]) and sorted(parts["validation"]) == sorted(order[240:300])
    assert sorted(parts["test"]) == sorted(order[300:])                      # 15 % of 2,000 = 300 rows
    long = split_indices(np.full(20000, "n"), None, "probation", (0.8, 0.2, 0.0), 0, "n")
    assert len(long["train"]) + len(long["validation"]) == 750               # NAB's cap: 15 % of 5,000
    with pytest.raises(RecipeError, match="too few to train and validate"):
        split_indices(np.full(12, "n"), None, "probation", (0.8, 0.2, 0.0), 0, "n")


def test_ab_fit_picks_the_error_that_separates_the_anomalies():
    from toolchain.hybrid import fit_ab, normalisation

    rng = np.random.default_rng(0)
    n = 400
    labels = np.zeros(n, bool)
    labels[-40:] = True
    re = rng.normal(1.0, 0.1, n)               # reconstruction error: blind to these anomalies
    pe = rng.normal(1.0, 0.1, n)
    pe[labels] += 0.15                          # prediction error: sees them, imperfectly
    norms = normalisation(re[~labels], pe[~labels])
    params, table = fit_ab(re, pe, labels, norms)
    assert (params["a"], params["b"]) == (0.0, 1.0)
    assert len(table) == 21
    params, _ = fit_ab(pe, re, labels, normalisation(pe[~labels], re[~labels]))
    assert (params["a"], params["b"]) == (1.0, 0.0)
    # Identical errors: every weighting ties, and the tie goes to a = b = 0.5.
    params, _ = fit_ab(pe, pe, labels, normalisation(pe[~labels], pe[~labels]))
    assert (params["a"], params["b"]) == (0.5, 0.5)


def test_synthetic_anomalies_change_only_the_last_sample():
    from toolchain.hybrid import synthetic_anomalies

    windows = np.random.default_rng(1).normal(size=(50, 4, 2)).astype(np.float32)
    fake = synthetic_anomalies(windows, 3)
    assert fake.shape == windows.shape
    assert (fake[:, :-1] == windows[:, :-1]).all()
    assert (np.abs(fake[:25, -1] - windows[:25, -1]).max(axis=1) >= 3.0).all()


def test_windows_never_span_a_gap_in_a_part():
    from toolchain.windows import part_windows, window_ends

    ids = np.array([0, 1, 2, 3, 10, 11, 12, 20])      # three stretches of consecutive rows
    assert list(window_ends(ids, 3)) == [2, 3, 6]
    rows = np.arange(16, dtype=np.float32).reshape(8, 2)
    windows, positions = part_windows(rows, 3, ids)
    assert list(positions) == [2, 3, 6] and (windows[2] == rows[4:7]).all()


def test_block_split_deals_whole_time_blocks_and_every_class_to_every_part():
    from toolchain.split import split_indices

    classes = np.array(["normal"] * 600 + ["ddos"] * 200 + ["scan"] * 200)    # classes in long runs
    time = np.arange(1000, dtype=float)
    parts = split_indices(classes, time, "blocks", (0.6, 0.2, 0.2), 7, "normal", blocks=20)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(1000))
    for name, rows in parts.items():
        assert set(classes[rows]) == {"normal", "ddos", "scan"}, name
        starts = rows[np.r_[True, np.diff(rows) != 1]]
        assert all(start % 50 == 0 for start in starts)           # stretches begin on block edges
    again = split_indices(classes, time, "blocks", (0.6, 0.2, 0.2), 7, "normal", blocks=20)
    assert all((again[k] == parts[k]).all() for k in parts)


def test_per_series_recipe_builds_a_bundle_per_nab_series_and_a_summary(nab_series_builds):
    """conftest's PER_SERIES_RECIPE through `tinyad build` (built once; test_gates reads it too)."""
    _, out, _, result = nab_series_builds
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [row["series"] for row in summary["series"]] == ["speed_7578", "TravelTime_451"]
    for row in summary["series"]:
        manifest = load_manifest(out / row["series"])
        assert manifest.detector == "lstm" and manifest.window == 6
        assert row["int8_windows"].endswith("/4" if row["series"] == "speed_7578" else "/1")
        assert "isolation_forest" in row["baselines"]
        info = CliRunner().invoke(main, ["info", str(out / row["series"])])
        assert f"labelled windows, int8: {row['int8_windows']} detected" in info.output, info.output
    table = (out / "summary.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 3 and "speed_7578" in table and "IF " in table


def test_compare_prints_the_detector_beside_the_baselines_from_the_bundle(temporal_bundles, shared_data):
    recipe, bundle, _ = temporal_bundles["lstm"]
    result = CliRunner().invoke(main, ["compare", recipe.path, "--out", str(bundle), "--data-root", str(shared_data)])
    assert result.exit_code == 0, result.output
    assert "building" not in result.output                 # the bundle was built from this recipe: no rebuild
    lines = {line.split()[0] + (" " + line.split()[1] if line.split()[1].startswith("(") else ""): line
             for line in result.output.splitlines()[2:] if line.strip()}
    assert {"lstm (float)", "lstm (int8)", "isolation_forest", "one_class_svm", "windowed_gaussian"} <= set(lines)
    report = json.loads((bundle / REPORT_FILE).read_text())
    int8 = next(r for r in report["compare"] if r["scorer"] == "lstm (int8)")
    # F1 is '-' where the scored test rows hold no labelled anomaly (compare._figures)
    f1_cell = "-" if int8["f1"] is None else f"{int8['f1']:.4f}"
    assert f" {f1_cell} " in lines["lstm (int8)"] and str(int8["bytes"]) in lines["lstm (int8)"]

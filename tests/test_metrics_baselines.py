"""The NAB window scorer on a hand-worked case, and every baseline on small real slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolchain import baselines
from toolchain.metrics import window_detection

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "nab/data/realKnownCause/machine_temperature_system_failure.csv"

# 20 rows at t = 0, 10, ..., 190 s; alarms on rows 1 5 6 9 10 14 15 16 17 19.
HAND_TIMES = np.arange(20) * 10.0
HAND_ALARMS = np.isin(np.arange(20), [1, 5, 6, 9, 10, 14, 15, 16, 17, 19])
HAND_WINDOWS = [(30, 60), (115, 150), (170, 175), (181, 189), (80, 85)]


def test_window_scorer_hand_case():
    # Worked by hand (windows are inclusive):
    #   W1 [30, 60]   holds rows 3 4 5 6 (t=30..60). Alarms 5, 6: detected; first alarm row 5,
    #                 2 scored rows (3, 4) before it -> delay 2 rows, 50-30 = 20 s; row 6 (t=60,
    #                 the end itself) is a repeat, not a false alarm.
    #   W2 [115, 150] holds rows 12..15 (t=120..150). Alarms 14, 15: detected; delay 2 rows,
    #                 140-115 = 25 s (from the labelled start, not from the first row at 120);
    #                 row 15 is a repeat.
    #   W3 [170, 175] holds row 17 (t=170 = its start). Alarm 17: detected, delay 0 rows, 0 s.
    #   W4 [181, 189] holds no row (t=180 and 190 fall outside): unscored, not detected.
    #   W5 [80, 85]   holds row 8. No alarm on 8: missed.
    # Windows 5, scored 4, detected 3, missed 1.
    # Alarms outside every window: rows 1 (t=10), 9 (90), 10 (100), 16 (160), 19 (190) = 5
    # false alarms over 20 points = 250 per 1,000. Alarms in windows: 5, 6, 14, 15, 17 = 5, of
    # which 2 are repeats (6, 15). Mean delay over W1..W3: (2+2+0)/3 rows, (20+25+0)/3 = 15 s.
    result = window_detection(HAND_ALARMS, HAND_TIMES, HAND_WINDOWS)
    assert {k: result[k] for k in ("points", "windows", "windows_scored", "detected", "missed", "false_alarms",
                                   "false_alarms_per_1000", "alarms_in_windows", "repeat_alarms_in_windows",
                                   "mean_delay_seconds")} == {
        "points": 20, "windows": 5, "windows_scored": 4, "detected": 3, "missed": 1, "false_alarms": 5,
        "false_alarms_per_1000": 250.0, "alarms_in_windows": 5, "repeat_alarms_in_windows": 2,
        "mean_delay_seconds": 15.0}
    assert result["mean_delay_rows"] == pytest.approx(4 / 3)
    per = result["per_window"]
    assert [w["detected"] for w in per] == [True, True, True, False, False]
    assert [w["rows"] for w in per] == [4, 4, 1, 0, 1]
    assert [w["first_alarm"] for w in per] == [5, 14, 17, None, None]
    assert [w["delay_rows"] for w in per] == [2, 2, 0, None, None]
    assert [w["delay_seconds"] for w in per] == [20.0, 25.0, 0.0, None, None]


def test_window_scorer_does_not_depend_on_row_order():
    shuffle = np.random.default_rng(0).permutation(20)
    result = window_detection(HAND_ALARMS[shuffle], HAND_TIMES[shuffle], HAND_WINDOWS)
    expected = window_detection(HAND_ALARMS, HAND_TIMES, HAND_WINDOWS)
    # first_alarm is a position into the arrays given: map it back through the shuffle.
    assert [None if w["first_alarm"] is None else int(shuffle[w["first_alarm"]]) for w in result["per_window"]] \
        == [w["first_alarm"] for w in expected["per_window"]]
    for w in result["per_window"] + expected["per_window"]:
        w.pop("first_alarm")
    assert result == expected


def test_window_scorer_without_alarms():
    result = window_detection(np.zeros(20, bool), HAND_TIMES, HAND_WINDOWS)
    assert result["detected"] == 0 and result["false_alarms"] == 0 and result["missed"] == 4
    assert np.isnan(result["mean_delay_rows"]) and np.isnan(result["mean_delay_seconds"])


def test_rolling_z_hand_case():
    # x = 1 3 1 3 10, window 4, current row excluded. Rows 0 and 1 have < 2 previous rows: 0.
    # Row 2: previous 1 3 -> mean 2, std 1, |1-2| = 1. Row 3: previous 1 3 1 -> mean 5/3,
    # std sqrt(11/3 - 25/9) = sqrt(8/9), |3-5/3| = 4/3 -> z = sqrt(2). Row 4: previous 1 3 1 3
    # -> mean 2, std 1, z = 8.
    x = np.array([[1.0], [3.0], [1.0], [3.0], [10.0]])
    expected = [0.0, 0.0, 1.0, np.sqrt(2.0), 8.0]
    np.testing.assert_allclose(baselines.rolling_z(x, None, 4, np.array([1e-9])), expected)
    # Rows given newest first with their times: the same scores, in the given order.
    np.testing.assert_allclose(baselines.rolling_z(x[::-1], np.arange(5)[::-1], 4, np.array([1e-9])),
                               expected[::-1])


def _prepared(recipe_data: dict, root: Path, split: dict, kind: str = "ae", window: int = 1):
    from toolchain.prepare import prepare
    from toolchain.recipe import parse_recipe
    from toolchain.scaling import fit_scaler
    from toolchain.train import TrainResult

    detector = {"kind": kind, **({"window": window} if window > 1 else {})}
    recipe = parse_recipe({"name": "t", "seed": 3, "data": recipe_data, "split": split, "detector": detector},
                          Path("t.toml"))
    prep = prepare(recipe, root)
    features = list(prep.dataset.features.columns)
    # Baselines read only the features, scaler and window of a TrainResult: no model needed.
    trained = TrainResult(None, fit_scaler(prep.raw("train", features)), features, 0.0, 0, window=window)
    return prep, trained, recipe


def test_every_baseline_beats_chance_on_the_sdn_slice():
    prep, trained, recipe = _prepared({"loader": "sdn_ddos", "path": "sdn_ddos_slice.csv.gz", "max_rows": 2000},
                                      ROOT / "calibration_data", {"method": "random"})
    results = baselines.run_all(prep, trained, recipe)
    assert set(results) == {"isolation_forest", "one_class_svm", "windowed_gaussian", "random_forest", "xgboost"}
    test_rows = len(prep.parts["test"])
    for name in ("isolation_forest", "one_class_svm", "random_forest", "xgboost"):
        assert results[name]["rows"] == test_rows
        assert results[name]["roc_auc"] > 0.75, (name, results[name]["roc_auc"])
        assert results[name]["parameters"] > 0
    for name in ("random_forest", "xgboost"):
        assert results[name]["f1"] > 0.9, (name, results[name]["f1"])
    # A random split shuffles time, so the windowed Gaussian only has to run here.
    assert results["windowed_gaussian"]["parameters"] == 0 and results["windowed_gaussian"]["rows"] == test_rows
    # The wrapper the build calls still gives the same IsolationForest figures.
    assert baselines.unsupervised(prep, trained, recipe)["isolation_forest"] == results["isolation_forest"]


def test_baselines_on_nab_machine_temperature_score_windows(shared_data):
    window = 8
    prep, trained, recipe = _prepared(
        {"loader": "nab", "path": MACHINE}, shared_data,
        {"method": "prefix", "train": 0.75, "validation": 0.25, "test": 0.0}, kind="lstm", window=window)
    results = baselines.run_all(prep, trained, recipe)
    # The training prefix holds no anomaly: the classifiers have nothing to learn from.
    assert results["random_forest"] == {"skipped": "the training rows hold one class"}
    assert results["xgboost"] == {"skipped": "the training rows hold one class"}
    for name in ("isolation_forest", "one_class_svm", "windowed_gaussian"):
        result = results[name]
        # Scored on the rows the temporal detector scores: the test part less its first W-1.
        assert result["rows"] == len(prep.parts["test"]) - (window - 1)
        assert result["windows"]["windows_scored"] == 4
        assert result["windows"]["detected"] >= 3, (name, result["windows"])
        assert result["roc_auc"] > 0.5, (name, result["roc_auc"])


def test_array_level_baselines_on_plain_nab_arrays(shared_data):
    from toolchain.datasets import first_window_row, load_dataset

    d = load_dataset("nab", shared_data, MACHINE)
    first = first_window_row(d)
    x = d.features[["value"]].to_numpy()
    x = (x - x[:first].mean()) / x[:first].std()
    y = d.classes != "normal"
    n_train = first * 3 // 4
    # Test: the 1,000 rows from the first window's start: its 567 anomalous rows, then 433 normal ones.
    test = slice(first, first + 1000)
    for function in (baselines.isolation_forest_scores, baselines.one_class_svm_scores):
        result = function(x[:n_train], y[:n_train], x[n_train:first], y[n_train:first], x[test], seed=1)
        # Row-wise the value alone barely separates this window (a slow decline: AUC ~0.5); by
        # window, an alarm inside it is what counts.
        assert result.report(y[test])["rows"] == 1000 and result.test_scores.shape == (1000,)
        assert window_detection(result.alarms, d.time[test], d.windows)["detected"] == 1
    gaussian = baselines.windowed_gaussian_scores(x[:n_train], None, x[n_train:first], y[n_train:first], x[test],
                                                  order_val=d.time[n_train:first], order_test=d.time[test])
    assert window_detection(gaussian.alarms, d.time[test], d.windows)["detected"] == 1
    with pytest.raises(ValueError, match="both classes"):
        baselines.random_forest_scores(x[:n_train], y[:n_train], x[n_train:first], y[n_train:first], x[test])

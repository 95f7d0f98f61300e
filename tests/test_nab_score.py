"""NAB's score: the nine published numbers from NAB's own scorer, and hand-worked small series."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_host.errors import DataError
from toolchain.metrics import nab_corpus_report, nab_score, nab_score_verdicts, nab_scores_all_profiles
from toolchain.nab_score import REFERENCE_DETECTORS, raw_by_threshold, reference_corpus, scaled_sigmoid

# 1,000 rows at t = row index: probation = 150 rows; one window on rows 500..599 (width 100).
ROWS = 1000
TIMES = np.arange(ROWS, dtype=np.float64)
WINDOW = [(500.0, 599.0)]
MAX_TP = 2 / (1 + np.exp(-5)) - 1            # S(-1) = 0.98661


def spikes(*rows: int) -> np.ndarray:
    scores = np.zeros(ROWS)
    scores[list(rows)] = 1.0
    return scores


def one_file(scores, windows=WINDOW, **kwargs):
    return nab_score({"f": (TIMES, scores)}, {"f": windows}, **kwargs)


@pytest.fixture(scope="module")
def reference(shared_data):
    return {d: reference_corpus(shared_data / "nab", d) for d in REFERENCE_DETECTORS}


@pytest.mark.parametrize("profile", ["standard", "reward_low_FP_rate", "reward_low_FN_rate"])
@pytest.mark.parametrize("detector", REFERENCE_DETECTORS)
def test_reproduces_nab_reference_scores(reference, shared_data, detector, profile):
    expected = json.loads((shared_data / "nab/reference/expected_scores.json").read_text())
    files, windows = reference[detector]
    result = nab_score(files, windows, profile)
    assert result.score == pytest.approx(expected["detectors"][detector][profile], abs=0.1)
    assert result.windows == 24 and result.perfect == 24.0


def test_sigmoid_landmarks():
    assert scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.0]) == pytest.approx([0.98661, 0.84828, 0.0, -0.98661, -1.0],
                                                                         abs=1e-5)


def test_detection_at_window_start_earns_full_tp_weight():
    result = one_file(spikes(500))
    assert result.raw == pytest.approx(1.0)
    assert (result.null, result.perfect, result.score) == (-1.0, 1.0, pytest.approx(100.0))
    assert result.files["f"].detected == 1 and result.files["f"].fp == 0


def test_only_the_earliest_detection_in_a_window_counts():
    # Row 550 sits halfway: p = -(599 - 550 + 1) / 100 = -0.5; row 590 later in the same window adds nothing.
    result = one_file(spikes(550, 590), threshold=0.5)
    assert result.raw == pytest.approx(scaled_sigmoid(-0.5) / MAX_TP)
    assert result.files["f"].tp == 2 and result.files["f"].detected == 1


def test_false_positive_far_from_windows_costs_the_fp_weight():
    # Before any window: -A_FP in full; 3+ widths after the window: -A_FP as well.
    for far in (300, 599 + 3 * 99):
        result = one_file(spikes(500, far), threshold=0.5)
        assert result.raw == pytest.approx(1.0 - 0.11), far
        assert result.files["f"].fp == 1
    reward_low_fp = one_file(spikes(500, 300), profile="reward_low_FP_rate", threshold=0.5)
    assert reward_low_fp.raw == pytest.approx(1.0 - 0.22)


def test_false_positive_just_after_a_window_costs_little():
    # Row 600: d = (600 - 599) / (100 - 1), S(d) ~ -0.025.
    result = one_file(spikes(500, 600), threshold=0.5)
    assert result.raw == pytest.approx(1.0 + 0.11 * scaled_sigmoid(1 / 99))
    assert -0.004 < result.raw - 1.0 < 0


def test_missed_window_costs_fn_weight_per_profile():
    quiet = np.zeros(ROWS)
    assert one_file(quiet).raw == -1.0
    assert one_file(quiet, profile="reward_low_FN_rate").raw == -2.0
    assert one_file(quiet).score == 0.0


def test_detection_in_probation_period_is_ignored():
    result = one_file(spikes(10), threshold=0.5)
    assert result.files["f"].probation_rows == 150
    assert (result.raw, result.files["f"].fp, result.files["f"].tn) == (-1.0, 0, ROWS - 150 - 100)
    # The same spike after the probation period is a false alarm.
    assert one_file(spikes(160), threshold=0.5).files["f"].fp == 1


def test_probation_period_is_capped_at_750_rows():
    rows = 20_000
    result = nab_score({"f": (np.arange(rows), np.zeros(rows))}, {})
    assert result.files["f"].probation_rows == 750


def test_file_without_windows_only_costs_false_alarms():
    files = {"f": (TIMES, spikes(500)), "empty": (TIMES, spikes(300))}
    result = nab_score(files, {"f": WINDOW}, threshold=0.5)
    assert result.files["empty"].windows == 0
    assert result.files["empty"].raw == pytest.approx(-0.11)
    assert result.raw == pytest.approx(1.0 - 0.11)
    alone = nab_score({"empty": (TIMES, spikes(300))}, {})
    assert np.isnan(alone.score) and alone.perfect == 0.0


def test_window_in_probation_is_not_scored_but_counts_as_perfect():
    result = one_file(np.zeros(ROWS), windows=[(50.0, 60.0), (500.0, 599.0)])
    f = result.files["f"]
    assert (f.windows, f.windows_scored, result.null, result.perfect) == (2, 1, -1.0, 2.0)


def test_optimised_threshold_beats_every_other_threshold():
    rng = np.random.default_rng(7)
    files = {f"s{i}": (TIMES, np.round(rng.random(ROWS), 2)) for i in range(3)}
    windows = {"s0": [(300.0, 340.0), (700.0, 760.0)], "s1": [(900.0, 950.0)]}
    for name in ("s0", "s1"):
        for start, _ in windows[name]:
            files[name][1][int(start) + 3] = 1.5
    best = nab_score(files, windows)
    candidates = np.unique(np.concatenate([s for _, s in files.values()]))[::-1]
    brute = np.array([nab_score(files, windows, threshold=float(t)).raw for t in candidates])
    thresholds, curve = raw_by_threshold(files, windows)
    assert np.array_equal(thresholds, candidates)
    assert curve == pytest.approx(brute, abs=1e-9)
    assert best.raw == pytest.approx(max(brute.max(), best.null))
    assert best.threshold == 1.5 and best.detected == 3


def test_repeated_timestamps_follow_row_order():
    # A real NAB file repeats an hour of stamps; windows are found in file order, not by sorting.
    times = np.concatenate((np.arange(600.0), np.arange(500.0, 900.0)))
    result = nab_score({"f": (times, spikes(500))}, {"f": [(500.0, 599.0)]})
    assert result.files["f"].detected == 1 and result.raw == pytest.approx(1.0)


def test_verdicts_score_at_half():
    verdicts = (spikes(500, 300) > 0).astype(np.int8)
    results = nab_score_verdicts({"f": (TIMES, verdicts)}, {"f": WINDOW})
    assert results["standard"].threshold == 0.5
    assert results["standard"].raw == pytest.approx(0.89)
    assert results["reward_low_FP_rate"].raw == pytest.approx(0.78)


def test_corpus_report_is_plain_json():
    unit = spikes(500) * 0.9
    report = nab_corpus_report({"f": (TIMES, unit)}, {"f": WINDOW}, verdicts={"f": unit > 0.5})
    text = json.dumps(report)
    assert set(report) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "verdicts"}
    assert report["standard"]["score"] == pytest.approx(100.0) and report["standard"]["threshold"] == 0.9
    assert "NaN" not in text and "Infinity" not in text


def test_all_profiles_use_their_own_weights():
    results = nab_scores_all_profiles({"f": (TIMES, np.zeros(ROWS))}, {"f": WINDOW})
    assert {p: r.null for p, r in results.items()} == {"standard": -1.0, "reward_low_FP_rate": -1.0,
                                                        "reward_low_FN_rate": -2.0}


def test_user_mistakes_are_data_errors():
    with pytest.raises(DataError, match="unknown NAB profile 'strict'"):
        one_file(np.zeros(ROWS), profile="strict")
    with pytest.raises(DataError, match="999 scores"):
        nab_score({"f": (TIMES, np.zeros(999))}, {})
    with pytest.raises(DataError, match="overlap"):
        one_file(np.zeros(ROWS), windows=[(500.0, 599.0), (550.0, 650.0)])


def test_window_detection_carries_nab_of_its_alarms():
    from toolchain.metrics import window_detection

    # The rows given are the scored rows: no probationary period, so an alarm on row 10 counts.
    hit = window_detection(spikes(500, 10) > 0, TIMES, WINDOW)["nab"]
    assert hit["standard"]["raw"] == pytest.approx(1.0 - 0.11)
    assert hit["standard"]["score"] == pytest.approx(100 * 1.89 / 2)
    quiet = window_detection(np.zeros(ROWS, bool), TIMES, WINDOW + [(5000.0, 5010.0)])["nab"]
    assert (quiet["standard"]["score"], quiet["standard"]["perfect"]) == (0.0, 1.0)   # window without rows left out
    assert quiet["reward_low_FN_rate"]["null"] == -2.0


def test_combine_fixed_adds_raw_scores_over_series():
    from toolchain.nab_score import combine_fixed, nab_of_alarms

    a = nab_of_alarms(spikes(500) > 0, TIMES, WINDOW)
    b = nab_of_alarms(np.zeros(ROWS, bool), TIMES, WINDOW)
    assert combine_fixed([a, b])["standard"] == pytest.approx(50.0)
    both = nab_score_verdicts({"a": (TIMES, spikes(500)), "b": (TIMES, np.zeros(ROWS))}, {"a": WINDOW, "b": WINDOW},
                              probation=0)
    assert both["standard"].score == pytest.approx(50.0)


def test_summary_rows_show_nab_of_run_verdicts_and_the_corpus():
    from toolchain.compare import nab_cell, nab_corpus_lines, series_nab
    from toolchain.metrics import window_detection

    caught = window_detection(spikes(500) > 0, TIMES, WINDOW)
    missed = window_detection(np.zeros(ROWS, bool), TIMES, WINDOW)
    report = {"verify": {"models": {"float": {"windows": caught}, "int8": {"windows": missed}},
                         "adaptive": {"windows": {"int8": caught}}},
              "baselines": {"isolation_forest": {"windows": missed}, "xgboost": {"skipped": "one class"}}}
    row = series_nab(report)
    assert nab_cell(row) == "100.0 / 100.0"            # int8's run verdicts are the adaptive ones
    assert set(row["baseline_nab"]) == {"isolation_forest"}
    lines = nab_corpus_lines([row, {**row, "int8_nab": missed["nab"]}, {"series": "x", "error": "gate failed"}])
    assert lines[0] == "- tinyad float (2 series): NAB 100.0 / 100.0 / 100.0"
    # reward low FN: raw 1 - 2 = -1, null -4, perfect 2 -> 100 * 3 / 6.
    assert lines[1] == "- tinyad int8 (2 series): NAB 50.0 / 50.0 / 50.0"
    assert lines[2] == "- isolation_forest (2 series): NAB 0.0 / 0.0 / 0.0"


def test_null_is_the_detector_that_never_alarms_even_when_windows_fill_the_rows():
    from toolchain.metrics import window_detection

    # A test part that is mostly window (a labelled failure at the end of a series): a constant
    # detector alarming everywhere would earn +1 here, but NAB's null is the silent detector.
    nab = window_detection(spikes(0) > 0, TIMES, [(0.0, 899.0)])["nab"]["standard"]
    assert (nab["null"], nab["perfect"], nab["raw"]) == (-1.0, 1.0, pytest.approx(1.0))
    assert nab["score"] == pytest.approx(100.0)

"""Adaptive scoring (firmware_host/adaptive.py) and label-free builds: the likelihood's behaviour,
the exact-replay property the device link relies on, and a real label-free NAB build run by
`tinyad run`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host import adaptive

SMALL = {"history": 300, "short": 5, "min_history": 60, "reference": 1.0, "quiet": 0, "spatial_tolerance": 0}


def _noise(n: int, seed: int = 0) -> np.ndarray:
    """Squared Gaussian errors: what a forecaster's raw score looks like on a stationary series."""
    return np.random.default_rng(seed).normal(size=n) ** 2


def _windows(values: np.ndarray, width: int = 8) -> np.ndarray:
    """int8 windows (rows, width, 1) of a series of int8 values, each ending at its row."""
    padded = np.r_[np.full(width - 1, values[0]), values].astype(np.int8)
    return np.lib.stride_tricks.sliding_window_view(padded, width)[:, :, None].copy()


def test_a_step_in_the_raw_scores_drives_the_unit_score_up():
    raw = _noise(2000)
    raw[1500:] *= 25.0                                   # errors 5x larger from row 1500 on
    unit, flags = adaptive.unit_scores(raw, SMALL)
    assert unit[:1500].max() < adaptive.DEFAULTS["threshold"]
    assert unit[1500:1510].max() >= 0.99 and flags[1500:1510].any()
    assert unit[1500:1505].min() < unit[1505:1510].max()  # it rises as the short window fills


def test_stationary_noise_keeps_the_unit_score_low():
    unit, flags = adaptive.unit_scores(_noise(20000, seed=1), SMALL)
    assert np.median(unit) < 0.05
    assert flags.mean() < 0.002                          # at most 2 alarms per 1,000 rows


def test_the_reference_follows_drift():
    """A level change that lasts becomes the new normal: alarms at the change, and a history later
    no more than on stationary noise, where a static threshold would flag a tenth of the rows."""
    raw = _noise(3000, seed=2)
    raw[1000:] *= 9.0
    unit, flags = adaptive.unit_scores(raw, SMALL)
    assert flags[1000:1020].any()
    later = slice(1000 + SMALL["history"] + 2 * SMALL["short"], None)
    assert flags[later].mean() < 0.002
    assert (raw[later] > np.percentile(raw[:1000], 99.9)).mean() > 0.1


def test_a_lasting_episode_is_one_alarm_with_quiet_rows():
    raw = _noise(1500, seed=4)
    raw[1000:1060] *= 400.0
    loud = adaptive.unit_scores(raw, {**SMALL, "short": 1})[1]
    quiet = adaptive.unit_scores(raw, {**SMALL, "short": 1, "quiet": 20})[1]
    assert loud[1000:1060].sum() > 10
    assert quiet[1000] and quiet[1000:1060].sum() <= 3 and not quiet[:1000].any()


def test_a_sample_beyond_the_recent_range_scores_one():
    values = np.random.default_rng(5).integers(-20, 21, size=800)
    values[700] = 40                                     # 20 past the max of a range of 40: tolerance 0.05
    windows = _windows(values)
    params = {**SMALL, "spatial_tolerance": 0.05}
    unit, flags = adaptive.unit_scores(np.ones(800), params, windows)   # a flat model score
    assert unit[700] == 1.0 and flags[700] and not flags[:700].any()
    assert adaptive.unit_scores(np.ones(800), SMALL, windows)[0][700] < 0.5   # range check off


def test_the_window_channels_see_a_level_shift_the_model_missed():
    values = np.r_[np.random.default_rng(6).integers(-5, 6, size=700), np.full(100, 30)]
    windows = _windows(values)
    params = {**SMALL, "short": 1, "change_reference": 10.0, "context_reference": 10.0}
    unit, flags = adaptive.unit_scores(np.ones(800), params, windows)
    assert flags[700] and unit[700] >= 0.99
    assert not adaptive.unit_scores(np.ones(800), {**SMALL, "short": 1}, windows)[1].any()


def test_unit_scores_are_multiples_of_one_65535th_in_0_1():
    raw = np.r_[_noise(500), np.inf, np.nan, 0.0, 1e300, _noise(200) * 50]
    unit, _ = adaptive.unit_scores(raw, SMALL)
    steps = unit * adaptive.UNIT_STEPS
    assert (unit >= 0).all() and (unit <= 1).all()
    assert np.array_equal(steps, np.rint(steps))
    learning = SMALL["min_history"] + 2 * SMALL["short"] - 2
    assert unit[:learning].max() == 0.0 and unit[learning] > 0.0     # still learning, then scoring


def test_state_is_rebuilt_exactly_by_replaying_the_last_span_rows():
    rng = np.random.default_rng(3)
    raw = _noise(1500, seed=3) * np.r_[np.ones(900), np.full(600, 16.0)]
    windows = _windows(rng.integers(-30, 31, size=1500))
    params = {**SMALL, "quiet": 7, "spatial_tolerance": 0.05, "change_reference": 300.0,
              "context_reference": 300.0}
    whole = adaptive.AdaptiveState(params)
    pieces = [whole.push(raw[a:b], windows[a:b])[0] for a, b in ((0, 1), (1, 333), (333, 901), (901, 1500))]
    expected = np.concatenate(pieces)
    assert np.array_equal(expected, adaptive.unit_scores(raw, params, windows)[0])   # batching changes nothing
    span = adaptive.span(params)
    for k in (10, span - 1, span, 905, 1499):
        fresh = adaptive.AdaptiveState(params)
        start = max(k - span, 0)
        fresh.push(raw[start:k], windows[start:k])
        unit, _ = fresh.push(raw[k:], windows[k:])
        assert np.array_equal(unit, expected[k:]), k
    plain, expected = adaptive.span(SMALL), adaptive.unit_scores(raw, SMALL)[0]
    short_replay = adaptive.AdaptiveState(SMALL)
    short_replay.push(raw[700 - plain + 1:700])                 # one row too few: the history is short
    assert not np.array_equal(short_replay.push(raw[700:])[0], expected[700:])


def test_sums_that_could_leave_exact_integers_are_refused():
    with pytest.raises(ValueError, match="2\\*\\*53"):
        adaptive.params_with_defaults({"short": 100, "history": 100000})


# -- a real label-free build -------------------------------------------------------------------

RECIPE = """
name = "nab_label_free"
seed = 3
[data]
loader = "nab"
path = "nab/data/realTraffic/occupancy_6005.csv"
relative_to = "recipe"
[split]
method = "probation"
train = 0.8
validation = 0.2
test = 0
[features]
top_k = 0
sweep = []
[preprocess]
log1p = "none"
[detector]
kind = "lstm"
window = 8
lstm_units = 8
epochs = 3
batch_size = 64
[threshold]
method = "percentile"
[quantize]
representative_rows = 150
golden_rows = 12
[adaptive]
enabled = true
history = 400
min_history = 60
[verify]
gate = "windows"
"""


def _unlabelled_series(shared_data: Path, folder: Path) -> Path:
    """Real NAB rows with no labelled window: occupancy_6005 before its first window, as a NAB folder
    whose labels list no window for it."""
    import pandas as pd

    frame = pd.read_csv(shared_data / "nab" / "data" / "realTraffic" / "occupancy_6005.csv")
    (folder / "nab" / "data" / "realTraffic").mkdir(parents=True)
    (folder / "nab" / "labels").mkdir(parents=True)
    frame.iloc[:1600].to_csv(folder / "nab" / "data" / "realTraffic" / "occupancy_6005.csv", index=False)
    (folder / "nab" / "labels" / "combined_windows.json").write_text(json.dumps({"realTraffic/occupancy_6005.csv": []}))
    recipe = folder / "label_free.toml"
    recipe.write_text(RECIPE)
    return recipe


@pytest.fixture(scope="module")
def label_free(label_free_build):
    """The build of RECIPE on _unlabelled_series (tests/conftest.py; test_link streams it too)."""
    return label_free_build


@pytest.mark.slow
def test_a_series_with_no_labelled_window_builds_label_free(label_free):
    from firmware_host.manifest import load_manifest

    recipe, bundle, _, report, _ = label_free
    assert report["split"]["method"] == "probation"
    assert report["split"]["train"]["rows"] + report["split"]["validation"]["rows"] == 240   # 15 % of 1,600
    assert report["data"]["classes"] == {"normal": 1600}
    a = report["verify"]["adaptive"]
    assert "windows" not in a and a["passed"] and a["verdict_agreement"] >= 0.995
    manifest = load_manifest(bundle)
    assert manifest.adaptive["history"] == 400 and manifest.adaptive["reference"] > 0
    assert manifest.adaptive == a["params"]["int8"]


@pytest.mark.slow
def test_tinyad_run_writes_the_unit_score_and_replays_exactly(label_free, shared_data):
    from firmware_host.cli import main
    from firmware_host.runner import Detector, replay_length

    _, bundle, _, _, folder = label_free
    series = folder / "nab" / "data" / "realTraffic" / "occupancy_6005.csv"
    out, lines = folder / "verdicts.csv", folder / "verdicts.jsonl"
    result = CliRunner().invoke(main, ["run", str(bundle), "--input", str(series), "--output", str(out),
                                       "--batch-rows", "41", "--jsonl", str(lines)])
    assert result.exit_code == 0, result.output
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    # The JSON lines carry the same unit scores (null while warming up) and verdicts, and the time cells.
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["unit_score"] for r in records] == [float(r["unit_score"]) if r["unit_score"] else None for r in rows]
    assert [r["is_anomaly"] for r in records] == [r["is_anomaly"] == "1" for r in rows]
    assert records[0]["time"] == series.read_text().splitlines()[1].split(",")[0]
    assert list(rows[0]) == ["row", "status", "score", "unit_score", "is_anomaly", "class"]
    scored = [r for r in rows if r["status"] == "scored"]
    unit = np.array([float(r["unit_score"]) for r in scored])
    assert len(scored) == 1600 - 7 and (unit >= 0).all() and (unit <= 1).all() and unit.max() > 0
    assert all(r["unit_score"] == "" for r in rows if r["status"] == "warming_up")
    flags = np.array([r["is_anomaly"] == "1" for r in scored])
    assert np.array_equal(flags, unit >= 0.5)
    with Detector(bundle) as detector:
        inputs = detector.prepare(np.loadtxt(series, delimiter=",", skiprows=1, usecols=1, ndmin=2))
        whole = detector.stream().push(inputs)
        assert np.array_equal(np.round(whole.unit_score[7:], 6), unit)
        length = replay_length(detector.manifest)
        assert length == 7 + adaptive.span(detector.manifest.adaptive)
        for k in (length + 50, 1500):
            fresh = detector.stream()
            fresh.push(inputs[k - length:k])
            again = fresh.push(inputs[k:])
            assert np.array_equal(again.unit_score, whole.unit_score[k:]), k
            assert np.array_equal(again.is_anomaly, whole.is_anomaly[k:]), k


@pytest.mark.slow
def test_the_gate_refuses_int8_that_disagrees_with_float_on_the_unit_score(label_free, shared_data):
    """The verify stage again on the same two models, scoring the model channel alone with the
    threshold in the bulk of its unit scores: there the small int8-float differences flip
    verdicts, and the build must refuse what it would serve."""
    from firmware_host.cli import main
    from firmware_host.manifest import load_manifest

    _, bundle, work, report, folder = label_free
    alone = {"quiet": 0, "spatial_tolerance": 0.0, "change_reference": 0.0, "context_reference": 0.0}
    raw = np.load(work / "test_scores.npz")["int8"]
    unit, _ = adaptive.unit_scores(raw, {**load_manifest(bundle).adaptive, **alone})
    bulk = float(np.median(unit[unit > 0]))
    strict = folder / "strict.toml"
    strict.write_text(RECIPE.replace("min_history = 60", f"min_history = 60\nthreshold = {bulk}\nquiet = 0\n"
                                     "spatial_tolerance = 0.0\nwindow_channels = false"))
    result = CliRunner().invoke(main, ["verify", str(strict), "--work", str(work), "--data-root", str(shared_data)])
    assert result.exit_code != 0
    assert "verify gate failed" in result.output and "agree on" in result.output, result.output
    assert report["verify"]["adaptive"]["verdict_agreement"] >= 0.995      # the recipe's own settings pass

"""Build gates and quantization remedies with real builds: real training, real TFLite
conversion, the real interpreter, real NAB and SDN rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host import scoring
from firmware_host.cli import main
from firmware_host.errors import QuantizationError
from firmware_host.manifest import REPORT_FILE, load_manifest

from conftest import SLICE

pytestmark = pytest.mark.slow

SERIES = "nab/data/realTraffic/TravelTime_451.csv"

UNREACHABLE_RECIPE = f"""
name = "unreachable"
seed = 3
[data]
loader = "sdn_ddos"
path = "{SLICE.as_posix()}"
relative_to = "recipe"
max_rows = 1500
[features]
top_k = 5
sweep = []
xgb_rounds = 20
[detector]
kind = "vae_dnn"
hidden = [8]
latent = 3
classifier = [8]
activation = "relu6"
epochs = 2
classifier_epochs = 2
batch_size = 64
[quantize]
representative_rows = 100
golden_rows = 8
[verify]
max_f1_drop = -1.0     # int8 F1 a whole 100 pt above float's: no quantization reaches it
min_agreement = 0.0    # so that the F1 gate alone fails
"""


@pytest.fixture(scope="module")
def nab_build(nab_series_builds):
    """A small real LSTM bundle on one NAB series (TravelTime_451, one labelled window in its test
    part), gated on windows and false alarms: its build by conftest's per-series recipe."""
    import dataclasses

    from toolchain.recipe import load_recipe

    path, out, work, result = nab_series_builds
    assert result.exit_code == 0, result.output
    each = load_recipe(path)            # the recipe build_each gives the series
    recipe = dataclasses.replace(each, data=dataclasses.replace(each.data, path=SERIES, per_series=False))
    bundle = out / Path(SERIES).stem
    return recipe, json.loads((bundle / REPORT_FILE).read_text()), bundle, work / Path(SERIES).stem


def _forced(recipe, bundle: Path, work: Path, data_root: Path, int8_threshold: float):
    """The build's real float and int8 test scores, turned into verdicts by the scoring code with
    the bundle's float threshold and a forced int8 one; and their labelled-window figures."""
    from toolchain.prepare import prepare
    from toolchain.verify import window_detection

    saved = np.load(work / "test_scores.npz")
    thresholds = {"float": load_manifest(bundle).threshold_float, "int8": int8_threshold}
    verdicts, models = {}, {}
    prep = prepare(recipe, data_root)
    for name in ("float", "int8"):
        outputs = np.zeros((len(saved[name]), 1))
        verdicts[name] = scoring.decide("lstm", saved[name], outputs, thresholds[name])
        models[name] = {"windows": window_detection(prep, "test", saved["positions"], verdicts[name].is_anomaly)}
    return models, verdicts


def test_windows_gate_records_false_alarms_and_fails_an_always_alarming_int8_model(nab_build, shared_data):
    from toolchain import gates
    from toolchain.verify import check_gate

    recipe, report, bundle, work = nab_build
    built = {g["gate"]: g for g in report["verify"]["gates"]}
    assert list(built) == ["windows", "false_alarms", "agreement"] and all(g["passed"] for g in built.values())
    manifest = load_manifest(bundle)
    assert [g["gate"] for g in manifest.metrics["gates"]] == list(built)
    assert manifest.recipe["verify"]["false_alarm_tolerance"] == 0.25
    assert manifest.metrics["gates"][1]["limit_per_1000"] == pytest.approx(
        built["false_alarms"]["float_per_1000"] * 1.25 + 1.0)

    # The same real int8 scores with the threshold forced below every score: an alarm on every row.
    models, verdicts = _forced(recipe, bundle, work, shared_data, -np.inf)
    assert verdicts["int8"].is_anomaly.all()
    found = {g["gate"]: g for g in gates.evaluate(models, verdicts, recipe.verify)}
    assert found["windows"]["passed"], "detecting every window is exactly what the old gate asked"
    assert not found["false_alarms"]["passed"] and found["false_alarms"]["int8_per_1000"] > 500
    assert not found["agreement"]["passed"]
    with pytest.raises(QuantizationError, match="false alarms per 1,000 rows"):
        check_gate({"gates": list(found.values()), "passed": False})


def test_a_series_with_no_labelled_window_counts_every_alarm_as_false(nab_build, shared_data):
    """Label-free: no window to count, so the windows gate says it skipped and the false-alarm
    gate compares all alarms; forced, the int8 verdicts alarm on about 1 row in 10."""
    from toolchain import gates

    recipe, _, bundle, work = nab_build
    scores = np.load(work / "test_scores.npz")["int8"]
    threshold = float(np.quantile(scores, 0.9))
    models, verdicts = _forced(recipe, bundle, work, shared_data, threshold)
    unlabelled = {name: {} for name in models}
    found = {g["gate"]: g for g in gates.evaluate(unlabelled, verdicts, recipe.verify)}
    assert found["windows"]["passed"] and found["windows"].get("skipped")
    alarms = 1000 * np.mean(scores > threshold)
    assert alarms > 50 and found["false_alarms"]["int8_per_1000"] == pytest.approx(alarms)
    assert not found["false_alarms"]["passed"]


def test_unreachable_gate_tries_every_remedy_in_order_then_fails_in_one_line(tmp_path):
    from toolchain.remedies import ORDER

    recipe = tmp_path / "unreachable.toml"
    recipe.write_text(UNREACHABLE_RECIPE)
    out, work = tmp_path / "bundle", tmp_path / "work"
    result = CliRunner().invoke(main, ["build", str(recipe), "--out", str(out), "--work", str(work)])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert ("verify gate failed (f1) after 5 quantization attempts (recipe, more_calibration, synthetic_share, "
            "per_tensor, matched_threshold; skipped: int16_activations); best attempt '") in error[0]
    assert "pt below float F1" in error[0] and "allowed: -100.00 pt" in error[0]
    for number, remedy in enumerate(ORDER[1:], start=1):     # each attempt reported as it ran
        assert f"remedy {number}/5 {remedy}" in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
    attempts = json.loads((work / "quantize.json").read_text())["remedies"]["attempts"]
    assert [a["remedy"] for a in attempts] == list(ORDER) == [
        "recipe", "more_calibration", "synthetic_share", "per_tensor", "matched_threshold", "int16_activations"]
    assert [a["status"] for a in attempts] == ["failed"] * 5 + ["skipped"]
    assert attempts[2]["settings"]["synthetic_share"] == 0.1 and attempts[3]["settings"]["per_channel"] is False
    assert attempts[1]["settings"]["representative_rows"] > 100
    assert attempts[4]["settings"]["int8_threshold"] == "match_float"
    assert "int8 input and output" in attempts[5]["reason"]
    assert sum(bool(a.get("kept")) for a in attempts) == 1


def test_a_remedy_that_passes_is_kept_and_stated_in_the_manifest(built_bundle):
    """The shared small SDN build (leaky ReLU, 200 calibration rows): its own calibration leaves
    int8 and float verdicts apart on about 1 test row in 10, and more calibration rows pass."""
    from toolchain.remedies import ORDER

    report = json.loads((built_bundle / REPORT_FILE).read_text())
    remedies = report["quantize"]["remedies"]
    attempts = remedies["attempts"]
    first = {g["gate"]: g for g in attempts[0]["gates"]}
    assert attempts[0]["status"] == "failed" and not first["agreement"]["passed"]
    kept = [a for a in attempts if a.get("kept")]
    assert len(kept) == 1 and kept[0]["status"] == "passed" and kept[0] is attempts[-1]
    assert remedies["chosen"] == kept[0]["remedy"] and kept[0]["remedy"] in ORDER[1:]
    manifest = load_manifest(built_bundle)
    assert manifest.calibration["quantization_remedy"] == remedies["chosen"]
    assert manifest.calibration["rows"] == kept[0]["settings"]["representative_rows"]
    assert len(np.load(built_bundle / "representative.npy")) == manifest.calibration["rows"]
    agreement = {g["gate"]: g for g in manifest.metrics["gates"]}["agreement"]
    assert agreement["passed"] and agreement["agreement"] >= manifest.recipe["verify"]["min_agreement"]


def test_verify_settings_are_checked(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\nloader = 'sdn_ddos'\npath = 'x.csv'\n[verify]\nmin_agreement = 1.5\n")
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "min_agreement = 1.5; a share between 0 and 1" in result.output


def test_matched_threshold_is_the_cut_that_agrees_best():
    """The matched_threshold remedy's rule against a brute force over every cut, on float scores
    and their int8-like copy (1/256 steps, so ties)."""
    from toolchain.verify import matched_threshold

    rng = np.random.default_rng(4)
    float_scores = rng.beta(0.5, 0.5, 2000)
    int8_scores = np.round((float_scores + rng.normal(0, 0.01, 2000)) * 256) / 256
    reference = float_scores > 0.37
    chosen = matched_threshold(int8_scores, reference)
    agreement = lambda t: np.mean((int8_scores > t) == reference)
    cuts = np.r_[-1.0, np.unique(int8_scores)]
    assert agreement(chosen) == max(agreement(t) for t in cuts) > 0.98

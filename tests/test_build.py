"""Build-side tests with real training, real TFLite conversion and the real interpreter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.errors import QuantizationError
from firmware_host.manifest import GOLDEN_FILE, MANIFEST_FILE, MODEL_FILE, REPORT_FILE, load_manifest, sha256_file

from conftest import write_recipe


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bundle_is_complete_and_self_describing(built_bundle):
    names = {p.name for p in built_bundle.iterdir()}
    assert {MODEL_FILE, "model_float.tflite", MANIFEST_FILE, GOLDEN_FILE, REPORT_FILE, "representative.npy"} <= names
    manifest = load_manifest(built_bundle)
    assert manifest.sha256 == sha256_file(built_bundle / MODEL_FILE)
    assert manifest.detector == "vae_dnn" and len(manifest.features) == 6
    assert manifest.size_bytes["int8"] == (built_bundle / MODEL_FILE).stat().st_size
    assert 0 < manifest.weight_bytes["int8"] < manifest.weight_bytes["float"]
    for model in ("float", "int8"):
        assert {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc",
                "confusion_matrix"} <= set(manifest.metrics[model])
    assert manifest.metrics["int8"]["accuracy"] > 0.85
    assert manifest.split["method"] == "random" and manifest.split["test"]["rows"] > 0
    # The recipe's 200 rows, or more where a quantization remedy needed them (the manifest says which).
    assert manifest.calibration["rows"] == len(np.load(built_bundle / "representative.npy"))
    assert manifest.calibration["quantization_remedy"] in ("recipe", "more_calibration")
    golden = json.loads((built_bundle / GOLDEN_FILE).read_text())
    assert len(golden["inputs"]) == 16 and np.asarray(golden["inputs"]).dtype.kind == "i"
    report = json.loads((built_bundle / REPORT_FILE).read_text())
    assert report["features"]["sweep"][0]["k"] == 4
    assert report["features"]["leakage"]["columns"] == ["src", "dst", "dt", "switch"]
    ops = set(report["quantize"]["ops"])
    assert "FULLY_CONNECTED" in ops and not ops & {"DEQUANTIZE", "ELU"}


def test_int8_op_list_gate_names_float_ops(tmp_path):
    """ELU (the VAE+DNN paper's activation) stays in float after TF 2.21's int8 conversion."""
    from toolchain.convert import assert_int8, convert
    from toolchain.keras_env import import_tf

    _, keras = import_tf()
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="elu")(inputs)))
    rows = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    int8 = convert(model, int8=True, representative=rows)
    with pytest.raises(QuantizationError, match="ELU"):
        assert_int8(int8)
    good = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(inputs)))
    ops = assert_int8(convert(good, int8=True, representative=rows))
    assert {op.name for op in ops} == {"FULLY_CONNECTED", "TANH"}


def test_build_with_elu_fails_and_writes_no_bundle(tmp_path):
    recipe = write_recipe(tmp_path, name="elu", activation="elu", epochs=1)
    out = tmp_path / "bundle"
    result = invoke("build", recipe, "--out", out, "--work", tmp_path / "work")
    assert result.exit_code == 1
    assert "computes in float" in result.output and "ELU" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_stages_rerun_one_by_one_and_verify_gate_fails_on_a_wrecked_calibration(tmp_path):
    """select-features -> train -> quantize -> verify as separate commands; then a calibration set
    squeezed to a tiny range wrecks the int8 model and verify must exit non-zero."""
    recipe = write_recipe(tmp_path, name="stages", kind="ae", activation="tanh", epochs=6, max_drop=0.005)
    work = tmp_path / "work"
    for stage in ("select-features", "train", "quantize", "verify"):
        result = invoke(stage, recipe, "--work", work)
        assert result.exit_code == 0, (stage, result.output)
    assert "rank" in CliRunner().invoke(main, ["select-features", str(recipe), "--work", str(work)]).output

    from toolchain.convert import convert
    from toolchain.keras_env import import_tf

    _, keras = import_tf()
    model = keras.models.load_model(work / "model.h5", compile=False)
    squeezed = np.load(work / "representative.npy") * 0.02
    (work / MODEL_FILE).write_bytes(convert(model, int8=True, representative=squeezed))
    result = invoke("verify", recipe, "--work", work)
    assert result.exit_code == 1
    assert "verify gate failed" in result.output and "pt below float F1" in result.output


def test_stage_out_of_order_says_what_to_run_first(tmp_path):
    recipe = write_recipe(tmp_path, name="order")
    result = invoke("train", recipe, "--work", tmp_path / "empty")
    assert result.exit_code == 1 and "tinyad select-features" in result.output


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\n", "needs a [data] table"),
    ("[data]\nloader = 'sdn_ddos'\npath = 'x.csv'\n[detector]\nkind = 'gan'\n", "choose one of ae, vae_dnn"),
    ("[data]\nloader = 'sdn_ddos'\npath = 'x.csv'\n[detector]\nlayers = 3\n", "unknown key(s) in [detector]: layers"),
    ("[data\n", "not valid TOML"),
    ("[data]\nloader = 'sdn_ddos'\npath = 'x.csv'\n[detector]\nkind = 'vae_dnn'\ntrain_noise = 0.1\n",
     "train_noise = 0.1; a standard deviation (0 or more) for kind = \"ae\" only"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = invoke("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_missing_data_file_names_the_public_source(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[data]\nloader = 'sdn_ddos'\npath = 'sdn_ddos/dataset_sdn.csv.gz'\n")
    result = invoke("build", path, "--data-root", tmp_path, "--out", tmp_path / "b")
    assert result.exit_code == 1 and "10.17632/jxpfjc64kr.1" in result.output


def test_ae_train_noise_trains_under_noise_and_deploys_without_it():
    """[detector] train_noise perturbs the AE's hidden activations while it learns; the deployed
    residual model computes the same output every time and converts to int8 ops alone."""
    from toolchain import convert, detectors
    from toolchain.recipe import DetectorSpec

    rows = np.random.default_rng(0).normal(size=(256, 6)).astype(np.float32)
    spec = DetectorSpec(kind="ae", hidden=[8], latent=2, activation="tanh", epochs=1, train_noise=0.5)
    model = detectors.train_autoencoder(rows, rows, spec, seed=1).model
    noise = [layer for layer in model.layers if "GaussianNoise" in type(layer).__name__]
    assert len(noise) == 3 and all(layer.stddev == 0.5 for layer in noise)
    first = detectors.predict(model, rows)
    np.testing.assert_array_equal(first, detectors.predict(model, rows))
    assert not np.allclose(model(rows, training=True), first, atol=1e-3)     # it is noisy while training
    int8 = convert.convert(model, int8=True, representative=rows[:64])
    assert "GAUSSIAN" not in " ".join(op.name for op in convert.assert_int8(int8)).upper()


def test_same_recipe_and_seed_reproduce_the_metrics(tmp_path):
    from toolchain.pipeline import stage_select_features, stage_train
    from toolchain.recipe import load_recipe

    recipe = load_recipe(write_recipe(tmp_path, name="repro", kind="ae", activation="tanh", epochs=3))
    thresholds = []
    for run in ("a", "b"):
        stage_select_features(recipe, Path("."), tmp_path / run)
        thresholds.append(stage_train(recipe, Path("."), tmp_path / run)["threshold_float"])
    assert thresholds[0] == pytest.approx(thresholds[1], rel=1e-3)


def test_generic_csv_build_with_label_flag_and_refusal_to_clobber(tmp_path):
    """A user's own CSV through `--label`; an --out that is not a bundle is never replaced."""
    import pandas as pd

    from conftest import SLICE

    frame = pd.read_csv(SLICE).drop(columns=["src", "dst", "dt", "switch", "Protocol"]).dropna()
    frame = frame.rename(columns={"label": "verdict"}).iloc[:1500]
    frame.to_csv(tmp_path / "mine.csv", index=False)
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[data]\nloader = 'csv'\npath = 'mine.csv'\nrelative_to = 'recipe'\n"
                      "[features]\ntop_k = 5\nsweep = []\nxgb_rounds = 20\n"
                      "[detector]\nkind = 'ae'\nhidden = [8]\nlatent = 3\nactivation = 'tanh'\nepochs = 3\n"
                      "[verify]\nmax_f1_drop = 1.0\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = invoke("build", recipe, "--label", "is_attack", "--out", tmp_path / "bundle", "--work", tmp_path / "w")
    assert result.exit_code == 1 and "label column 'is_attack' is missing" in result.output
    assert not (tmp_path / "bundle").exists()
    result = invoke("build", recipe, "--label", "verdict", "--out", precious, "--work", tmp_path / "refused")
    assert result.exit_code == 1 and "not a tinyad bundle" in result.output
    assert not (tmp_path / "refused").exists(), "refused before any stage ran"
    assert (precious / "notes.txt").read_text() == "keep me"
    out = tmp_path / "bundle"
    result = invoke("build", recipe, "--label", "verdict", "--out", out, "--work", tmp_path / "w")
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.detector == "ae" and manifest.normal_class == "0" and len(manifest.features) == 5
    # Rebuilding over an existing bundle replaces it.
    assert invoke("build", recipe, "--label", "verdict", "--out", out, "--work", tmp_path / "w").exit_code == 0


def test_multiclass_vae_dnn_on_nbaiot(shared_data, tmp_path):
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    path = tmp_path / "multi.toml"
    path.write_text("name = 'multi'\n[data]\nloader = 'nbaiot'\npath = ['n_baiot/benign_traffic.csv', "
                    "'n_baiot/scan.csv', 'n_baiot/thermostat_udp.csv']\n[features]\ntop_k = 10\nsweep = []\n"
                    "xgb_rounds = 20\n[detector]\nkind = 'vae_dnn'\nclasses = 'multi'\nhidden = [16]\nlatent = 4\n"
                    "classifier = [16]\nepochs = 10\nclassifier_epochs = 30\nbatch_size = 32\n"
                    "[verify]\nmax_f1_drop = 0.05\n")
    report = build(load_recipe(path), shared_data, tmp_path / "bundle", tmp_path / "work")
    manifest = load_manifest(tmp_path / "bundle")
    assert manifest.classes == ["benign_traffic", "scan", "thermostat_udp"] and manifest.output_shape == [1, 3]
    multi = report["verify"]["models"]["int8"]["multiclass"]
    assert multi["classes"] == manifest.classes and multi["accuracy"] > 0.8
    assert set(report["verify"]["models"]["int8"]["per_class"]) == {"scan", "thermostat_udp"}


def test_build_commands_on_a_run_only_install_say_what_to_install(tmp_path):
    """pandas made unimportable in a real subprocess, as on a Pi with `pip install tinyad`."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['pandas'] = None\n"
            "from firmware_host.cli import main\n"
            f"main(['build', {str(write_recipe(tmp_path))!r}])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install 'tinyad[train]'" in result.stderr and "missing: pandas" in result.stderr
    assert "Traceback" not in result.stderr

"""Shared fixtures: one real, small build (real training, real TFLite conversion, real
interpreter) reused by the run-side and CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SLICE = ROOT / "calibration_data" / "sdn_ddos_slice.csv.gz"

SMALL_RECIPE = """
name = "{name}"
seed = 3
[data]
loader = "sdn_ddos"
path = "{slice}"
relative_to = "recipe"
max_rows = {max_rows}
[features]
top_k = 6
sweep = [4]
sweep_epochs = 2
xgb_rounds = 30
[detector]
kind = "{kind}"
hidden = [16]
latent = 4
classifier = [16]
activation = "{activation}"
epochs = {epochs}
classifier_epochs = {epochs}
batch_size = 64
[quantize]
representative_rows = {rep_rows}
golden_rows = 16
[verify]
max_f1_drop = {max_drop}
"""


def write_recipe(folder: Path, name: str = "small", kind: str = "vae_dnn", activation: str = "leaky_relu",
                 epochs: int = 8, rep_rows: int = 200, max_drop: float = 0.05, max_rows: int = 3000) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SMALL_RECIPE.format(name=name, slice=SLICE.as_posix(), kind=kind, activation=activation,
                                        epochs=epochs, rep_rows=rep_rows, max_drop=max_drop, max_rows=max_rows))
    return path


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory) -> Path:
    """A real vae_dnn bundle built from the shipped SDN slice (about 20 s)."""
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    folder = tmp_path_factory.mktemp("build")
    recipe = load_recipe(write_recipe(folder))
    out = folder / "bundle"
    build(recipe, Path("."), out, folder / "work")
    return out


TEACHER_SECTION = '[train]\nteacher = "xgboost"\nteacher_weight = {weight}\naugment = "mixup"\naugment_rows = 200\n'


def distilled_recipe(folder: Path, name: str = "distilled", weight: str = "[0.5, 1.0]") -> Path:
    """The tiny vae_dnn recipe (1,000 rows of the shipped SDN slice, 3 epochs, no k-sweep) with an
    XGBoost teacher, teacher weights to choose between on validation, and 200 mixup rows. It reads
    the slice with the generic CSV loader and its label column, as a user's own CSV is read."""
    path = write_recipe(folder, name=name, epochs=3, max_rows=1000, rep_rows=150)
    generic = 'loader = "csv"\nlabel = "label"\nexclude = ["dt", "switch", "src", "dst", "Protocol"]'
    text = path.read_text().replace('loader = "sdn_ddos"', generic).replace("sweep = [4]", "sweep = []")
    path.write_text(text + TEACHER_SECTION.format(weight=weight))
    return path


@pytest.fixture(scope="session")
def distilled_builds(tmp_path_factory) -> list[tuple[Path, Path, Path]]:
    """(recipe, bundle, work folder) of the same distilled recipe built twice in one process
    (tests/test_distill.py reads the first; tests/test_reproducible.py compares the two)."""
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    folder = tmp_path_factory.mktemp("distilled")
    path = distilled_recipe(folder)
    found = []
    for i in (1, 2):
        build(load_recipe(path), Path("."), folder / f"bundle{i}", folder / f"work{i}")
        found.append((path, folder / f"bundle{i}", folder / f"work{i}"))
    return found


@pytest.fixture
def bundle_copy(built_bundle, tmp_path) -> Path:
    """A private copy of the built bundle that a test may tamper with."""
    copy = tmp_path / "bundle"
    shutil.copytree(built_bundle, copy)
    return copy


# Fixtures that train and convert a real model: a test using one is slow (seconds to a minute),
# so `pytest -m "not slow"` gives the fast loop.
BUILD_FIXTURES = {"built_bundle", "bundle_copy", "temporal_bundles", "distilled_builds", "label_free_build",
                  "nab_series_builds"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BUILD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _resource_present(item) -> str | None:
    """The resource a test needs that is present on this machine, or None."""
    if "shared_data" in getattr(item, "fixturenames", ()) and SHARED_DATA.is_dir():
        return f"the real data sets at {SHARED_DATA}"
    if item.get_closest_marker("pi_emu"):
        import pi_userland

        if pi_userland.complete(pi_userland.userland_path()) or pi_userland.why_not_buildable() is None:
            return "the emulated Raspberry Pi (buildable here)"
    if "broker" in getattr(item, "fixturenames", ()):          # the MQTT tests' real Mosquitto
        import os

        if Path("/usr/sbin/mosquitto").exists():
            return "/usr/sbin/mosquitto"
        if os.environ.get("CI"):
            return "CI (env CI is set, so .ci/run installed Mosquitto)"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip is not a pass: a test that needs ../shared/data or the emulated Pi fails, instead of
    skipping, when that resource is present here (so CI cannot turn green by skipping them)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        present = _resource_present(item)
        if present:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"skipped although {present} exists: {reason}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


WINDOW = 6
KINDS = ("lstm", "ae_lstm", "cnn_lstm_attn")
TEMPORAL_RECIPE = """
name = "t_{kind}"
seed = 5
[data]
loader = "ton_iot"
path = "ton_iot/Train_Test_IoT_Weather.csv.gz"
max_rows = {rows}
[split]
method = "time"
[features]
top_k = 0
sweep = []
[detector]
kind = "{kind}"
window = {window}
hidden = [12]
latent = 3
classifier = [8]
lstm_units = 8
conv_filters = 8
epochs = 2
batch_size = 64
dropout = 0.2
[quantize]
representative_rows = 150
golden_rows = 12
[verify]
max_f1_drop = 1.0
"""


def temporal_recipe(folder: Path, kind: str, rows: int = 2500) -> Path:
    path = folder / f"{kind}.toml"
    path.write_text(TEMPORAL_RECIPE.format(kind=kind, rows=rows, window=WINDOW))
    return path


@pytest.fixture(scope="session")
def temporal_bundles(tmp_path_factory, shared_data) -> dict:
    """One small real bundle per temporal detector, with its work directory: kind -> (recipe,
    bundle, work). Built by three `tinyad build` processes at once: a build (about 15 s) spends
    most of its time in TFLite conversion on one core, so one after another left a core idle."""
    import subprocess
    import sys

    from toolchain.recipe import load_recipe

    folder = tmp_path_factory.mktemp("temporal")
    built, running = {}, {}
    for kind in KINDS:
        path = temporal_recipe(folder, kind)
        out, work, log = folder / f"bundle_{kind}", folder / f"work_{kind}", folder / f"build_{kind}.log"
        with open(log, "w") as sink:
            running[kind] = subprocess.Popen([sys.executable, "-m", "firmware_host.cli", "build", str(path),
                                              "--data-root", str(shared_data), "--out", str(out), "--work", str(work)],
                                             stdout=sink, stderr=subprocess.STDOUT)
        built[kind] = (load_recipe(path), out, work)
    for kind, process in running.items():
        assert process.wait(timeout=900) == 0, (folder / f"build_{kind}.log").read_text()[-3000:]
    return built


@pytest.fixture(scope="session")
def label_free_build(tmp_path_factory, shared_data) -> tuple:
    """test_adaptive's label-free LSTM with adaptive scoring (window 8) on 1,600 unlabelled NAB
    rows, built once for tests/test_adaptive.py and tests/test_link.py (about 20 s):
    (recipe, bundle, work folder, build report, folder holding the NAB tree)."""
    from test_adaptive import _unlabelled_series
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    folder = tmp_path_factory.mktemp("label_free")
    recipe = load_recipe(_unlabelled_series(shared_data, folder))
    out, work = folder / "bundle", folder / "work"
    report = build(recipe, shared_data, out, work)
    return recipe, out, work, report, folder


# An LSTM per NAB series (speed_7578: 4 labelled windows in its test part, TravelTime_451: 1),
# gated on windows and false alarms.
PER_SERIES_RECIPE = """
name = "per_series"
seed = 2
[data]
loader = "nab"
path = ["nab/data/realTraffic/speed_7578.csv", "nab/data/realTraffic/TravelTime_45*.csv"]
per_series = true
[split]
method = "prefix"
train = 0.8
validation = 0.2
test = 0
[features]
top_k = 0
sweep = []
[detector]
kind = "lstm"
window = 6
lstm_units = 4
epochs = 2
[threshold]
method = "percentile"
percentile = 99.0
[quantize]
representative_rows = 100
golden_rows = 8
synthetic_share = 0.1
[verify]
gate = "windows"
"""


@pytest.fixture(scope="session")
def nab_series_builds(tmp_path_factory, shared_data) -> tuple:
    """PER_SERIES_RECIPE through `tinyad build` once (two real LSTM builds, about 30 s): test_temporal
    checks the summary, test_gates the gates of TravelTime_451's bundle.
    Returns (recipe path, out folder, work folder, the CliRunner result)."""
    from click.testing import CliRunner

    from firmware_host.cli import main

    folder = tmp_path_factory.mktemp("per_series")
    path, out, work = folder / "r.toml", folder / "out", folder / "work"
    path.write_text(PER_SERIES_RECIPE)
    result = CliRunner().invoke(main, ["build", str(path), "--data-root", str(shared_data), "--out", str(out),
                                       "--work", str(work)])
    return path, out, work, result

"""tinyad search: folds that never read the test part, the [search] space, the Pareto front, and
real searches (real training, int8 conversion, interpreter, SQLite study, worker processes)."""

from __future__ import annotations

import gzip
import re
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.errors import RecipeError
from tests.conftest import SLICE
from toolchain.recipe import load_recipe, parse_recipe
from toolchain.search import folds as fold_cuts
from toolchain.search import space, study

TINY = """
name = "{name}"
seed = 3
[data]
loader = "sdn_ddos"
path = "{slice}"
relative_to = "recipe"
max_rows = {rows}
[features]
top_k = 6
sweep = []
xgb_rounds = 20
[detector]
kind = "vae_dnn"
hidden = [16]
latent = 4
classifier = [16]
activation = "relu6"
epochs = 1
classifier_epochs = 1
batch_size = 128
[quantize]
representative_rows = 200
golden_rows = 16
[verify]
max_f1_drop = 1.0
min_agreement = 0.9
[search]
folds = 2
random_trials = 4
latency_invokes = 50
max_bytes = {max_bytes}
[search.space]
width = [8, 16]
activation = {activations}
epochs = [1]
batch_size = [128]
top_k = [4, 6]
"""


def tiny_recipe(folder: Path, name: str = "tiny", rows: int = 1200, max_bytes: int = 65536,
                activations: str = '["relu", "relu6"]') -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(name=name, slice=SLICE.as_posix(), rows=rows, max_bytes=max_bytes,
                                activations=activations))
    return path


def trials_in(db: Path) -> list:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{db}").get_trials()


# -- folds (no training) -----------------------------------------------------------------------

@pytest.mark.parametrize("split, method", [("random", "stratified"), ("time", "forward"), ("time", "blocked")])
def test_folds_never_include_test_rows(tmp_path, split, method):
    from toolchain.prepare import prepare

    recipe = load_recipe(tiny_recipe(tmp_path))
    recipe.split.method = split
    prep = prepare(recipe, Path("."))
    test = set(prep.parts["test"].tolist())
    learning = set(fold_cuts.learning_rows(prep).tolist())
    folds = fold_cuts.make_folds(prep, 3, method, seed=3)
    assert len(folds) == 3
    for fold in folds:
        parts = [set(getattr(fold, name).tolist()) for name in ("train", "validation", "held")]
        for part in parts:
            assert part and not part & test and part <= learning
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        shaped = fold_cuts.fold_prepared(prep, fold)
        assert set(shaped.parts["test"].tolist()) == parts[2]
        if method == "forward":          # nothing learnt from rows later than those scored
            time = np.asarray(prep.dataset.time, np.float64)
            assert time[fold.train].max() <= time[fold.held].min()
            assert time[fold.validation].max() <= time[fold.held].min()
    held = [set(f.held.tolist()) for f in folds]
    if method != "forward":              # every learning row is held out exactly once
        assert set().union(*held) == learning and sum(map(len, held)) == len(learning)
    if method == "stratified":           # each fold keeps the anomalous share
        shares = [prep.is_attack[f.held].mean() for f in folds]
        assert max(shares) - min(shares) < 0.02


def test_auto_folds_follow_the_split():
    """A files split (train and validation a stratified cut of one file, no time order) gets
    stratified folds, as a random split does; only ordered splits chain forward."""
    assert fold_cuts.fold_method("auto", "random") == "stratified"
    assert fold_cuts.fold_method("auto", "files") == "stratified"
    for ordered in ("time", "prefix", "blocks"):
        assert fold_cuts.fold_method("auto", ordered) == "forward"
    assert fold_cuts.fold_method("blocked", "files") == "blocked"


# -- the [search] section and one trial's recipe ---------------------------------------------------

def test_search_section_is_checked_and_ignored_by_build(tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    assert recipe.search.folds == 2 and "search" not in recipe.to_dict()
    default = load_recipe("models/default.toml")
    assert default.search is not None and "search" not in default.to_dict()
    raw = tomllib.loads(Path("models/default.toml").read_text())
    del raw["search"]
    assert parse_recipe(raw, Path("models/default.toml")).to_dict() == default.to_dict()
    for bad, words in (({"space": {"colour": [1]}}, "not a knob"), ({"folds": 1}, "folds"),
                       ({"space": {"dropout": {"low": 0.3, "high": 0.1}}}, "low <= high"),
                       ({"fold_method": "sideways"}, "choose one of"), ({"trails": 3}, "unknown key")):
        with pytest.raises(RecipeError, match=words):
            space.parse_search(bad, Path("r.toml"))


def test_a_trial_becomes_a_plain_recipe_that_reads_back(tmp_path):
    path = tiny_recipe(tmp_path)
    raw = tomllib.loads(path.read_text())
    knobs = {"depth": [1, 2, 3], "width": [8, 16], "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
             "epochs": [3], "top_k": [0, 4], "threshold": ["percentile"]}
    trial = optuna.trial.FixedTrial({"depth": 2, "width_0": 16, "width_1": 8, "learning_rate": 0.002, "top_k": 0})
    overrides = space.suggest(trial, knobs, raw)
    assert overrides == {("detector", "hidden"): [16, 8], ("detector", "learning_rate"): 0.002,
                         ("detector", "epochs"): 3, ("detector", "classifier_epochs"): 3,
                         ("features", "top_k"): 0, ("threshold", "method"): "percentile"}
    plain = space.apply(raw, overrides)
    assert "search" not in plain and "search" in raw and raw["detector"]["hidden"] == [16]
    text = space.recipe_toml(plain, "chosen\nby a test")
    assert text.startswith("# chosen\n# by a test\n")
    again = parse_recipe(tomllib.loads(text), path)
    assert again.to_dict() == parse_recipe(plain, path).to_dict()
    assert again.detector.hidden == [16, 8] and again.threshold.method == "percentile" and again.search is None


def test_csv_templates_make_recipes(tmp_path):
    from toolchain.search.run import csv_recipe

    csv_path = tmp_path / "flows.csv"
    csv_path.write_text("a,b,when,verdict\n1,2,3,0\n")
    for template, kind, metric in (("supervised", "vae_dnn", "f1"), ("ae", "ae", "roc_auc")):
        raw, path = csv_recipe(csv_path, "verdict", None, template)
        recipe = parse_recipe(raw, path)
        assert path.name == f"template_{template}.toml" and recipe.detector.kind == kind
        assert (recipe.data.loader, recipe.data.label, recipe.data.path) == ("csv", "verdict", str(csv_path))
        assert recipe.search.metric == metric and recipe.split.method == "random"
    raw, path = csv_recipe(csv_path, "verdict", "when", "supervised")
    recipe = parse_recipe(raw, path)
    assert recipe.split.method == "time" and recipe.data.time_column == "when"
    with pytest.raises(RecipeError, match="no such search template"):
        csv_recipe(csv_path, "verdict", None, "nonsense")


def test_pareto_front_and_choice():
    def row(n, score, size, p50, feasible=True):
        return {"trial": n, "state": "COMPLETE", "score": score, "int8_bytes": size, "p50_us": p50,
                "feasible": feasible}

    rows = [row(0, 0.90, 4000, 3.0), row(1, 0.95, 9000, 4.0), row(2, 0.89, 5000, 3.5),   # 2: dominated by 0
            row(3, 0.99, 2000, 1.0, feasible=False), row(4, 0.95, 8000, 4.5),             # 3: over a limit
            {"trial": 5, "state": "FAIL", "failure": "int8 gate"}, row(6, 0.90, 4000, 3.0)]  # 6: ties 0
    front = study.pareto_front(rows)
    assert [r["trial"] for r in front] == [4, 1, 0, 6]     # best score first, then fewer bytes; a tie stays
    assert study.choose(front)["trial"] == 4          # same score to 4 decimals: fewer bytes wins
    assert study.choose([]) is None


# -- real searches ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_search_default_end_to_end(tmp_path):
    """Two trials on the shipped SDN slice, the front, chosen.toml, and the final build on test."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["search", str(tiny_recipe(tmp_path)), "--trials", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trials = [t for t in trials_in(out / "study.db") if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    for t in trials:           # the device limits reach the sampler as constraints, and the front
        size, p50 = t.values[1:]
        assert t.constraints == {"int8_bytes_over_max": size - 65536, "p50_us_over_max": p50 - 10.0}
        assert t.user_attrs["feasible"] == (size <= 65536 and p50 <= 10.0)
    front = (out / "pareto.csv").read_text().splitlines()
    assert front[0].startswith("trial,state,score") and 1 <= len(front) - 1 <= 2
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    chosen = load_recipe(out / "chosen.toml")
    assert chosen.search is None
    number = int(re.search(r"trial (\d+) of", (out / "chosen.toml").read_text()).group(1))
    assert f"chosen: trial {number} ->" in result.output
    picked = next(t for t in trials if t.number == number)
    assert chosen.detector.activation == picked.params["activation"]
    assert chosen.features.top_k == picked.params["top_k"]
    assert (out / "bundle" / "manifest.json").is_file()
    assert "final build on the test part" in result.output and "XGBoost F1" in result.output


@pytest.mark.slow
def test_csv_search_two_workers_share_one_study(tmp_path):
    """--csv with a renamed label column, --jobs 2: both worker processes write trials to the one
    SQLite study, with no trial number lost or repeated."""
    import pandas as pd

    frame = pd.read_csv(SLICE).drop(columns=["dt", "switch", "src", "dst", "Protocol"])
    frame = frame.sample(n=1200, random_state=1).rename(columns={"label": "is_attack"})
    csv_path = tmp_path / "flows.csv.gz"
    with gzip.open(csv_path, "wt") as handle:
        frame.to_csv(handle, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["search", "--csv", str(csv_path), "--label", "is_attack", "--trials", "2",
                                       "--jobs", "2", "--out", str(out), "--no-build",
                                       "--template", str(tiny_recipe(tmp_path))])
    assert result.exit_code == 0, result.output
    trials = trials_in(out / "study.db")
    finished = [t for t in trials if study.finished(t)]
    assert 2 <= len(finished) <= 3                      # a worker may start one trial past the budget
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert {t.user_attrs["run"] for t in trials} == {trials[0].user_attrs["run"]}
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == len(trials)
    chosen = tomllib.loads((out / "chosen.toml").read_text())
    assert chosen["data"]["loader"] == "csv" and chosen["data"]["label"] == "is_attack"
    assert Path(chosen["data"]["path"]) == csv_path.resolve() and "search" not in chosen


@pytest.mark.slow
def test_failed_trials_are_recorded_not_crashed_and_a_rerun_resumes(tmp_path):
    """A trial whose activation does not quantize fails the op-list gate: recorded as FAIL with its
    reason, the search goes on, and with no feasible trial the command ends in one Error line.
    Running the same command again with a larger budget resumes the same study."""
    failing = tiny_recipe(tmp_path, "elu", rows=600, activations='["elu"]')
    out = tmp_path / "elu"
    runs = []
    for budget in (1, 2):
        result = CliRunner().invoke(main, ["search", str(failing), "--trials", str(budget), "--out", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "Error: no feasible trial" in result.output and "ELU" in result.output
        assert (out / "trials.csv").read_text().count("still computes in float") == budget
        runs.append(result)
    trials = trials_in(out / "study.db")
    assert [t.number for t in trials] == [0, 1] and {t.state.name for t in trials} == {"FAIL"}
    assert all("still computes in float" in t.user_attrs["failure"] for t in trials)
    assert len({t.user_attrs["run"] for t in trials}) == 2        # one trial from each run


def test_search_usage_mistakes_are_one_line_errors(tmp_path):
    runner = CliRunner()
    for args, words in (([], "give either RECIPE or --csv"), (["--csv", "x.csv"], "--csv needs --label"),
                        ([str(tiny_recipe(tmp_path)), "--csv", "x.csv", "--label", "y"], "give either RECIPE"),
                        (["--csv", str(tmp_path / "none.csv"), "--label", "y"], "no such CSV file")):
        result = runner.invoke(main, ["search", *args, "--trials", "1", "--out", str(tmp_path / "out")])
        assert result.exit_code in (1, 2) and words in result.output and "Traceback" not in result.output

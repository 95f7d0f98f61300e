"""``tinyad search`` as one library call: open or resume the study, rank features per fold,
run the trials (in this process, or in ``jobs`` worker processes sharing the storage), then the
Pareto front, the chosen recipe and one final build scored once on the test part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.errors import RecipeError, TinyadError

from . import report
from . import study as studies
from .space import apply, parse_search, recipe_toml

CONFIG_JSON, CHOSEN_TOML, STUDY_DB = "search.json", "chosen.toml", "study.db"
TEMPLATES = Path(__file__).resolve().parents[2] / "models"
SHIPPED_TEMPLATES = ("supervised", "ae")
POLL_S = 2.0                 # how often the coordinator reads the study while workers run
STOP_WAIT_S = 30.0           # how long interrupted workers get to tell their trial before being killed


class SearchError(TinyadError):
    """A search could not run or finish (a study from another recipe, a worker that died, Ctrl-C)."""


@dataclass
class SearchResult:
    out: Path
    storage: str
    study: str
    rows: list
    front: list
    chosen: dict | None
    limits: dict
    files: dict = field(default_factory=dict)
    chosen_path: Path | None = None
    build: dict | None = None       # the final build's figures (test part, once)
    build_error: str | None = None  # why the final build failed (a gate on the test part), if it did


def load_raw(path: Path) -> dict:
    """A recipe file's TOML table (checked as a recipe, [search] included)."""
    from ..recipe import load_recipe, tomllib

    load_recipe(path)
    return tomllib.loads(Path(path).read_text())


def csv_recipe(csv: Path, label: str, time_column: str | None, template: str) -> tuple[dict, Path]:
    """A recipe table for the user's own CSV from a template: ``supervised`` or ``ae`` (shipped as
    models/template_<name>.toml), or the path of a recipe file whose [data] is replaced."""
    from ..recipe import load_recipe, tomllib

    path = TEMPLATES / f"template_{template}.toml" if template in SHIPPED_TEMPLATES else Path(template)
    if not path.is_file():
        raise RecipeError(f"{path}: no such search template (shipped: {', '.join(SHIPPED_TEMPLATES)}, in the "
                          "source tree's models/; or give a recipe file)")
    load_recipe(path)
    csv = Path(csv).resolve()
    if not csv.is_file():
        raise RecipeError(f"{csv}: no such CSV file")
    raw = tomllib.loads(path.read_text())
    raw["name"] = csv.name.split(".")[0]
    raw["data"] = {**raw.get("data", {}), "loader": "csv", "path": str(csv), "label": label, "relative_to": "recipe"}
    if time_column:
        raw["data"]["time_column"] = time_column
        raw["split"] = {**raw.get("split", {}), "method": "time"}
    return raw, path


def _absolute_paths(raw: dict, recipe_path: Path) -> dict:
    """Data paths relative to the recipe's folder made absolute, so chosen.toml reads the same files."""
    data = raw.get("data", {})
    if data.get("relative_to") != "recipe":
        return raw
    base = Path(recipe_path).resolve().parent
    fix = (lambda p: str((base / p).resolve()))
    raw = {**raw, "data": {**data, "path": [fix(p) for p in data["path"]] if isinstance(data["path"], list)
                           else fix(data["path"])}}
    if raw.get("split", {}).get("test_path"):
        raw["split"] = {**raw["split"], "test_path": fix(raw["split"]["test_path"])}
    return raw


def _prepare_study(config: dict, raw: dict, path: Path, progress) -> dict:
    """Create or resume the study; on creation rank features on each fold's train rows (XGBoost
    gain, as the build ranks on its train part) and record them, so every worker reads one ranking."""
    from ..features import rank_features
    from ..prepare import prepare
    from ..recipe import parse_recipe
    from .folds import describe, fold_method, fold_prepared, make_folds
    from .trial import metric_for

    recipe = parse_recipe(raw, path)
    spec = parse_search(raw.get("search", {}), path)
    study = studies.open_study(config["storage"], config["study"])
    made_from = studies.fingerprint({"recipe": raw, "space": spec.knobs(recipe.detector.kind)})
    if study.user_attrs.get("fingerprint", made_from) != made_from:
        raise SearchError(f"study '{config['study']}' in {config['storage']} was made from another recipe or "
                          "search space; pass another --study or --out to start a new one")
    if "rankings" not in study.user_attrs:
        prep = prepare(recipe, Path(config["data_root"]))
        method = fold_method(spec.fold_method, recipe.split.method)
        folds = make_folds(prep, spec.folds, method, recipe.seed)
        rankings = []
        for number, fold in enumerate(folds, 1):
            _say(progress, f"ranking features with XGBoost on search fold {number}/{len(folds)}")
            ranked = rank_features(fold_prepared(prep, fold), recipe.features.xgb_rounds, recipe.seed)
            rankings.append([row["feature"] for row in ranked])
        study.set_user_attr("folds", {"method": method, "parts": describe(prep, folds)})
        study.set_user_attr("metric", metric_for(recipe, spec.metric))
        study.set_user_attr("rankings", rankings)
        study.set_user_attr("fingerprint", made_from)
    return {"max_bytes": spec.max_bytes, "max_p50_us": spec.max_p50_us}


def _say(progress, message: str) -> None:
    if progress:
        progress("search", 0, 0, {"message": message})


def _spawn(config_path: Path, config: dict, jobs: int, out: Path, progress) -> None:
    """``jobs`` worker processes on this machine, one TensorFlow thread each, sharing the study."""
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    logs = [open(out / f"worker-{i}.log", "wb") for i in range(jobs)]
    workers = [subprocess.Popen([sys.executable, "-m", "toolchain.search.worker", str(config_path), str(i)],
                                stdout=log, stderr=subprocess.STDOUT, env=env) for i, log in enumerate(logs)]
    study = studies.open_study(config["storage"], config["study"])
    last = None
    try:
        while any(w.poll() is None for w in workers):
            time.sleep(POLL_S)
            now = studies.status(study, config["trials"], config["run"], config["started"])
            if progress and now["done"] != last:
                progress("search", now["done"], now["total"], now)
                last = now["done"]
    except KeyboardInterrupt:
        _stop(workers)
        raise
    finally:
        for log in logs:
            log.close()
    dead = [i for i, w in enumerate(workers) if w.returncode != 0]
    if dead:
        tail = (out / f"worker-{dead[0]}.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SearchError(f"search worker {dead[0]} exited with code {workers[dead[0]].returncode}: {tail[0][:300]}"
                          f" (log: {out / f'worker-{dead[0]}.log'})")


def _stop(workers) -> None:
    """Workers got the terminal's SIGINT too; give them time to mark their trial, then end them."""
    deadline = time.time() + STOP_WAIT_S
    for w in workers:
        try:
            w.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


def run_search(raw: dict, path: Path, data_root: Path, out: Path, trials: int, jobs: int = 1,
               storage: str | None = None, study_name: str | None = None, timeout: float | None = None,
               build: bool = True, progress=None) -> SearchResult:
    """Search ``raw`` (a recipe table read from ``path``) until its study holds ``trials`` finished
    trials (a rerun resumes), then write the front, ``chosen.toml`` and, with ``build``, the bundle
    of the chosen recipe in ``out/bundle``."""
    from ..recipe import parse_recipe

    if trials < 1 or jobs < 1:
        raise RecipeError("--trials and --jobs must be at least 1")
    raw = _absolute_paths(raw, path)
    recipe = parse_recipe(raw, path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"recipe": raw, "recipe_path": str(Path(path).resolve()), "data_root": str(Path(data_root).resolve()),
              "storage": storage or f"sqlite:///{(out / STUDY_DB).resolve()}", "study": study_name or recipe.name,
              "trials": int(trials), "timeout": timeout, "run": uuid.uuid4().hex, "started": time.time()}
    config_path = out / CONFIG_JSON
    report._atomic_bytes(config_path, json.dumps(config, indent=2).encode())
    limits = _prepare_study(config, raw, path, progress)
    try:
        if jobs == 1:
            studies.work(config, 0, (lambda s: progress("search", s["done"], s["total"], s)) if progress else None)
        else:
            _spawn(config_path, config, jobs, out, progress)
    except KeyboardInterrupt:
        study = studies.open_study(config["storage"], config["study"])
        studies.fail_running(study, config["run"])
        done = studies.status(study, trials, config["run"], config["started"])["done"]
        raise SearchError(f"interrupted with {done} of {trials} trials finished; they are saved in "
                          f"{config['storage']}: run the same command again to resume") from None
    return finish(config, raw, limits, out, build, progress)


def finish(config: dict, raw: dict, limits: dict, out: Path, build: bool, progress) -> SearchResult:
    """Front, outputs, chosen.toml and the final build, from the study's trials."""
    study = studies.open_study(config["storage"], config["study"])
    rows = studies.trial_rows(study)
    front = studies.pareto_front(rows)
    chosen = studies.choose(front)
    result = SearchResult(out, config["storage"], config["study"], rows, front, chosen, limits)
    result.files = report.write_outputs(out, rows, front, chosen, limits)
    if chosen is None:
        return result
    overrides = {(s, k): v for s, k, v in chosen["overrides"]}
    header = (f"chosen by tinyad search: study '{config['study']}', trial {chosen['trial']} of {len(rows)}\n"
              f"int8 {chosen['metric']} {chosen['score']:.4f} (mean of {len(chosen['fold_scores'])} validation "
              f"folds), {chosen['int8_bytes']} B, p50 {chosen['p50_us']:.2f} us\n"
              f"build it with: tinyad build {out / CHOSEN_TOML}")
    result.chosen_path = out / CHOSEN_TOML
    text = recipe_toml(apply(raw, overrides), header)
    _check_round_trip(text, raw, overrides, Path(config["recipe_path"]))
    report._atomic_bytes(result.chosen_path, text.encode())
    if build:
        try:
            result.build = final_build(result.chosen_path, Path(config["data_root"]), out, progress)
        except TinyadError as exc:      # the front and chosen.toml stand; the caller reports the failure
            result.build_error = str(exc)
    return result


def _check_round_trip(text: str, raw: dict, overrides: dict, path: Path) -> None:
    """chosen.toml must load as the very recipe the trial scored."""
    from ..recipe import parse_recipe, tomllib

    written = parse_recipe(tomllib.loads(text), path).to_dict()
    scored = parse_recipe(apply(raw, overrides), path).to_dict()
    if written != scored:
        raise SearchError("chosen.toml does not read back as the chosen trial's recipe (a tinyad bug)")


def final_build(chosen_path: Path, data_root: Path, out: Path, progress) -> dict:
    """One build of the chosen recipe, its test part scored once: int8 and float beside XGBoost
    (same features, scaled, same test rows) and XGBoost on every candidate feature."""
    from ..pipeline import build
    from ..recipe import load_recipe

    _say(progress, f"final build of {chosen_path} (the test part is scored once, here)")
    recipe = load_recipe(chosen_path)
    built = build(recipe, data_root, out / "bundle", out / "work", progress)
    models, xgb = built["verify"]["models"], built["baselines"].get("xgboost", {})
    summary = {"bundle": str(out / "bundle"), "test_rows": built["verify"]["scored_rows"],
               "int8_f1": models["int8"]["f1"], "float_f1": models["float"]["f1"],
               "int8_roc_auc": models["int8"]["roc_auc"], "xgboost_f1": xgb.get("f1"),
               "xgboost_all_features_f1": (built["features"].get("xgboost_baseline") or {}).get("test", {}).get("f1"),
               "agreement": built["verify"]["int8_vs_float"]["verdict_agreement"],
               "int8_bytes": built["quantize"]["size_bytes"]["int8"],
               "p50_us": next((r.get("p50_us") for r in built["compare"] if r["scorer"].endswith("(int8)")), None),
               "splits": {}}
    for method, other in built["splits"].items():
        summary["splits"][method] = {"int8_f1": other["verify"]["models"]["int8"]["f1"],
                                     "xgboost_all_features_f1": other["xgboost_baseline"]["test"]["f1"]}
    return summary

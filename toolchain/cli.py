"""Build-side commands. Each one parses and calls one pipeline function; the ``tinyad`` group
(``firmware_host.cli.TinyadGroup``) is the one boundary that turns a TinyadError into a
one-line error. TensorFlow is imported inside the pipeline, not here."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from firmware_host.report_text import metrics_table, teacher_line


class Progress:
    """Renders ``progress(stage, done, total, info)`` callbacks on stderr as a live bar."""

    def __init__(self):
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.open_line = False

    def __call__(self, stage: str, done: int, total: int, info: dict) -> None:
        elapsed = time.perf_counter() - self.started
        if total:
            width = 24
            filled = int(width * done / total)
            extra = "  ".join(f"{k} {v:.4g}" for k, v in info.items() if k in ("loss", "val_loss", "val_accuracy"))
            line = f"[{elapsed:6.1f}s] {stage:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {extra}"
            if self.tty:
                click.echo("\r" + line.ljust(110), nl=False, err=True)
                self.open_line = done < total
                if not self.open_line:
                    click.echo("", err=True)
            elif done == total or done == 1 or done % 5 == 0:
                click.echo(line, err=True)
        else:
            if self.open_line:
                click.echo("", err=True)
                self.open_line = False
            click.echo(f"[{elapsed:6.1f}s] {stage:<16} {info.get('message', '')}", err=True)


def _common(function):
    function = click.option("--label", default=None,
                            help="Label column for the generic CSV loader (overrides the recipe's [data] label)")(function)
    function = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                            help="Folder the recipe's data paths are relative to "
                                 "[default: $TINYAD_DATA, else ../shared/data]")(function)
    function = click.option("--work", type=click.Path(file_okay=False), default=None,
                            help="Folder for stage outputs [default: build/<recipe name>.work]")(function)
    return click.argument("recipe", type=click.Path(dir_okay=False))(function)


def _setup(recipe_path, data_root, work, label=None):
    from . import missing_build_modules
    from .datasets import resolve_data_root
    from .recipe import load_recipe

    missing = missing_build_modules()
    if missing:
        raise click.ClickException(f"building needs the build extra: pip install 'tinyad[train]' "
                                   f"(missing: {', '.join(missing)})")

    recipe = load_recipe(recipe_path)
    if label:
        recipe.data.label = label
    root = resolve_data_root(data_root) if recipe.data.relative_to == "data_root" else Path(".")
    return recipe, root, Path(work) if work else Path("build") / f"{recipe.name}.work"


def _run_stage(stage: str, recipe_path, label, data_root, work, **kwargs):
    """Load the recipe and run one pipeline function by name (``tinyad``'s group maps TinyadError)."""
    from . import pipeline

    recipe, root, work = _setup(recipe_path, data_root, work, label)
    return recipe, work, getattr(pipeline, stage)(recipe, root, work, progress=Progress(), **kwargs)


def _echo_verify(report: dict) -> None:
    click.echo(f"verify on {report['test_rows']} test rows ({report['interpreter']}):")
    for line in metrics_table(report["models"]):
        click.echo("  " + line)
    a = report["int8_vs_float"]
    f1_drop = ("" if report["models"]["float"].get("attack_rows") == 0 else     # label-free: no F1
               f"; F1 drop {100 * report['f1_drop']:.2f} pt (gate {100 * report['max_f1_drop']:.2f} pt)")
    click.echo(f"  int8 vs float: verdict agreement {a['verdict_agreement']:.4f}, score rank correlation "
               f"{a['score_rank_correlation']:.4f}{f1_drop}")
    for gate in report.get("gates", []):
        click.echo(f"  gate {gate['gate']:<12} {'pass' if gate['passed'] else 'FAIL'}: {gate['text']}")
    if "teacher" in report:
        click.echo(f"  {teacher_line(report['teacher'])}")


@click.command("build")
@_common
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Bundle directory to write [default: build/<recipe name>]")
@click.option("--teacher", type=click.Choice(["none", "xgboost"]), default=None,
              help="Distil from a teacher: 'xgboost' trains the vae_dnn classifier on an XGBoost model's class "
                   "probabilities (fitted on the training rows) blended with the labels, by the recipe's [train] "
                   "teacher_weight (default 0.5) [default: the recipe's [train] teacher]")
def build(recipe, label, data_root, work, out, teacher):
    """Run every stage of RECIPE and write a device bundle.

    Stages: select-features -> train -> quantize -> verify -> bundle. The bundle is written
    to a temporary folder and renamed into place only when complete and past the verify gate.
    Recipes live in models/*.toml.

    \b
    Examples:
      tinyad build models/default.toml --out build/default
      tinyad build models/sdn_ddos_vae_dnn.toml --data-root ../shared/data
      tinyad build my_recipe.toml --label is_attack --out build/mine
      tinyad build models/default.toml --teacher xgboost --out build/default-distilled
    """
    from .compare import comparison_lines
    from .pipeline import build as run_build
    from .pipeline import build_each, summary_markdown

    recipe, root, work = _setup(recipe, data_root, work, label)
    if teacher:
        from .recipe import with_teacher

        recipe = with_teacher(recipe, teacher)
    out = Path(out) if out else Path("build") / recipe.name
    if recipe.data.per_series:
        summary = build_each(recipe, root, out, work, Progress())
        click.echo(summary_markdown(summary["series"]))
        failed = [r["series"] for r in summary["series"] if "error" in r]
        click.echo(f"{len(summary['series']) - len(failed)} of {len(summary['series'])} series built into {out}"
                   f" (summary: {out / 'summary.md'})")
        if failed:
            raise click.ClickException(f"{len(failed)} series failed: {', '.join(failed)}")
        return
    report = run_build(recipe, root, out, work, Progress())
    _echo_verify(report["verify"])
    for method, other in report["splits"].items():
        m = other["verify"]["models"]
        xgb = other["xgboost_baseline"]["test"]
        click.echo(f"split '{method}': int8 accuracy {m['int8']['accuracy']:.4f} F1 {m['int8']['f1']:.4f}; float "
                   f"F1 {m['float']['f1']:.4f}; XGBoost accuracy {xgb['accuracy']:.4f} F1 {xgb['f1']:.4f}")
        for gate in other["verify"].get("gates", []):
            click.echo(f"  gate {gate['gate']:<12} {'pass' if gate['passed'] else 'FAIL'}: {gate['text']}")
        if "teacher" in other["verify"]:
            click.echo(f"  {teacher_line(other['verify']['teacher'])}")
    q = report["quantize"]
    click.echo(f"int8 model {q['size_bytes']['int8']} B (float {q['size_bytes']['float']} B), weight bytes ratio "
               f"{q['weight_ratio']:.3f}; ops: {', '.join(sorted(set(q['ops'])))}")
    chosen = q.get("remedies", {}).get("chosen")
    if chosen and chosen != "recipe":
        click.echo(f"quantization remedy used: {chosen} ({q['remedies']['attempts'][-1]['description']}); "
                   "see report.json quantize.remedies")
    click.echo("compared on the same test rows:")
    for line in comparison_lines(report["compare"]):
        click.echo("  " + line)
    click.echo(f"bundle written to {out} in {report['build_seconds']:.0f} s")


@click.command("select-features")
@_common
def select_features(recipe, label, data_root, work):
    """Rank RECIPE's candidate features by XGBoost gain and sweep k (5, 10, 15, all).

    Prints the ranked table, the leakage check of identifier columns, and for each k the
    detector's validation F1 and int8 size. Writes features.json to the work folder.
    """
    recipe, work, result = _run_stage("stage_select_features", recipe, label, data_root, work)
    click.echo(f"{'rank':>4}  {'feature':<28}{'gain share':>11}")
    for row in result["ranking"]:
        mark = "*" if row["feature"] in result["selected"] else " "
        click.echo(f"{row['rank']:>4}{mark} {row['feature']:<28}{row['share']:>11.4f}")
    click.echo(f"(* kept: top {len(result['selected'])})")
    if result["leakage"]:
        leak = result["leakage"]
        click.echo(f"leakage check: identifiers {', '.join(leak['columns'])} alone give test accuracy "
                   f"{leak['test']['accuracy']:.4f} (kept out of the features)")
    click.echo(f"{'k':>4}{'val F1':>9}{'val AUC':>9}{'int8 B':>9}{'float B':>9}")
    for row in result["sweep"]:
        click.echo(f"{row['k']:>4}{row['validation_f1']:>9.4f}{row['validation_roc_auc']:>9.4f}"
                   f"{row['int8_size_bytes']:>9}{row['float_size_bytes']:>9}")


@click.command("train")
@_common
def train(recipe, label, data_root, work):
    """Fit the scaler and train RECIPE's detector on the selected features (after select-features)."""
    recipe, work, info = _run_stage("stage_train", recipe, label, data_root, work)
    click.echo(f"trained {recipe.detector.kind}: {info['parameters']} parameters, float threshold "
               f"{info['threshold_float']:.6g}; saved to {work}")


@click.command("quantize")
@_common
def quantize(recipe, label, data_root, work):
    """Convert the trained model to float32 and full-integer int8 TFLite and check the int8 op list."""
    recipe, work, info = _run_stage("stage_quantize", recipe, label, data_root, work)
    click.echo(f"int8 {info['size_bytes']['int8']} B, float {info['size_bytes']['float']} B; weight bytes int8 "
               f"{info['weight_bytes']['int8']} / float {info['weight_bytes']['float']} = {info['weight_ratio']:.3f}")
    click.echo(f"int8 ops: {', '.join(info['ops'])}")


@click.command("verify")
@_common
def verify(recipe, label, data_root, work):
    """Score the test split with the Keras, float TFLite and int8 TFLite models and apply the gate.

    Exits non-zero when int8 F1 falls more than the recipe's max_f1_drop below float F1.
    """
    from .verify import check_gate

    _, _, report = _run_stage("stage_verify", recipe, label, data_root, work, gate=False)
    _echo_verify(report)
    check_gate(report)


@click.command("compare")
@_common
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Bundle directory [default: build/<recipe name>]")
@click.option("--rebuild", is_flag=True, help="Build again even if the bundle was built from this very recipe.")
def compare(recipe, label, data_root, work, out, rebuild):
    """Print RECIPE's detector (float and int8) beside the classical baselines.

    IsolationForest, One-Class SVM, a windowed-Gaussian z-score, and RandomForest and XGBoost
    where the training rows hold labels: all scored on the same split and the same test rows,
    with parameters, int8 bytes and single-invoke latency p50/p99 (NAB data: windows
    detected, false alarms per 1,000 points, delay). Reads the table from the bundle's
    report.json when the bundle was built from this recipe; builds it otherwise.

    \b
    Example:
      tinyad compare models/nab_machine_temperature_lstm.toml
    """
    import json

    from .compare import comparison_lines
    from .pipeline import build as run_build

    loaded, root, work = _setup(recipe, data_root, work, label)
    out = Path(out) if out else Path("build") / loaded.name
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() and not rebuild else None
    if report is None or report.get("recipe") != json.loads(json.dumps(loaded.to_dict())) or "compare" not in report:
        click.echo(f"building {out} (the table comes from a build)", err=True)
        report = run_build(loaded, root, out, work, Progress())
    rows = report["verify"].get("scored_rows", report["verify"]["test_rows"])
    click.echo(f"{loaded.name}: {rows} test rows, {report['split']['method']} split, same rows for every scorer")
    for line in comparison_lines(report["compare"]):
        click.echo("  " + line)


@click.command("init")
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False),
              help="The CSV file to build from (a header row naming the columns; .gz is fine)")
@click.option("--label", default=None, help="Column that says which rows are normal [default: none]")
@click.option("--time", "time_column", default=None,
              help="Column holding each row's time [default: found by name or by its dates]")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="recipe.toml", show_default=True,
              help="Recipe file to write")
@click.option("--force", is_flag=True, help="Replace --out if it exists")
def init(csv_path, label, time_column, out, force):
    """Write a starter recipe for your own CSV file, explaining each choice in comments.

    Reads the first rows by tinyad's own cell rules and sorts the columns into kept numbers
    and yes/no values, excluded identifiers (ids, IP/MAC addresses, constant columns),
    categories, the label and a time column. Picks a split (time order when there is a time
    column, else random) and a detector: vae_dnn with a label, ae without, and a label-free
    lstm with adaptive scoring for one value over time.

    \b
    Example:
      tinyad init --csv flows.csv --label is_attack --out flows.toml
      tinyad build flows.toml --out build/flows
    """
    from .starter import inspect_csv, plan_recipe, starter_recipe, write_recipe

    out = Path(out)
    if out.exists() and not force:     # before reading a large file for nothing
        raise click.ClickException(f"{out}: already exists; pass --force to replace it, or choose another --out")
    found = inspect_csv(csv_path, label, time_column)
    text = starter_recipe(found, out.parent)
    write_recipe(text, out, force)
    plan = plan_recipe(found)
    click.echo(f"wrote {out}: {len(found.kept())} of {len(found.columns)} columns kept, {plan['split']} split, "
               f"detector {plan['detector']}; next: tinyad build {out}")


def _search_progress():
    """Prints the search's progress line (trials done, best feasible so far, ETA); other stages as a build."""
    build_progress = Progress()

    def show(stage: str, done: int, total: int, info: dict) -> None:
        if stage != "search" or not total:
            return build_progress(stage, done, total, info)
        best = info.get("best")
        found = (f"best feasible: trial {best['trial']} {best['metric']} {best['score']:.4f}, {best['int8_bytes']} B, "
                 f"{best['p50_us']:.2f} us" if best else "no feasible trial yet")
        eta = info.get("eta_s")
        eta_text = "-" if eta is None else f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s"
        failed = f" ({info['failed']} failed)" if info.get("failed") else ""
        click.echo(f"[{info['elapsed_s']:6.0f}s] trials {done}/{total}{failed}  {found}  ETA {eta_text}", err=True)
    return show


@click.command("search")
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Search on your own CSV file instead of a recipe (with --label), from a shipped template")
@click.option("--label", default=None, help="Label column: with --csv, which rows are normal; with RECIPE, "
                                            "overrides [data] label")
@click.option("--time", "time_column", default=None,
              help="With --csv: the time column; the split and the search folds then follow time order")
@click.option("--template", default="supervised", show_default=True,
              help="With --csv: 'supervised' (models/template_supervised.toml: vae_dnn, F1), 'ae' "
                   "(template_ae.toml: autoencoder on the normal rows, ROC-AUC), or a recipe file of your own "
                   "whose [data] the CSV replaces")
@click.option("--trials", type=int, required=True,
              help="Trials the study holds when the search ends (a rerun resumes up to this many)")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Worker processes on this machine sharing the study (one TensorFlow thread each)")
@click.option("--storage", default=None,
              help="Optuna storage URL [default: sqlite:///OUT/study.db]; a PostgreSQL or MySQL URL lets "
                   "workers on several machines share one study")
@click.option("--study", "study_name", default=None, help="Study name in the storage [default: the recipe name]")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Folder for the study, pareto.csv/png, chosen.toml and the final bundle "
                   "[default: build/search/<recipe name>]")
@click.option("--timeout", type=float, default=None, help="Start no new trial after this many seconds")
@click.option("--split", "split_method", type=click.Choice(["random", "time", "blocks"]), default=None,
              help="Override RECIPE's [split] method for the search and the final build (e.g. search the same "
                   "recipe once on a random and once on a time split)")
@click.option("--no-build", is_flag=True, help="Write chosen.toml but skip the final build (e.g. on a helper machine)")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder the recipe's data paths are relative to [default: $TINYAD_DATA, else ../shared/data]")
def search(recipe, csv_path, label, time_column, template, trials, jobs, storage, study_name, out, timeout,
           split_method, no_build, data_root):
    """Search RECIPE's [search] space for the best int8 model that fits the device.

    Each trial trains a recipe variant on validation folds of the train + validation rows
    (never the test part), converts it to int8 and scores int8 on the held fold rows, and
    measures int8 bytes and invoke p50. Objectives: int8 F1 (ROC-AUC for autoencoders) up,
    bytes down, p50 down; trials over [search] max_bytes / max_p50_us are infeasible, trials
    that fail a gate are recorded as failed. Prints the Pareto front (pareto.csv, pareto.png),
    writes the chosen trial as chosen.toml (a plain recipe for tinyad build), and builds it
    once, scoring the test part beside XGBoost. Ctrl-C keeps the study: rerun to resume.

    \b
    Examples:
      tinyad search models/default.toml --trials 20
      tinyad search models/sdn_ddos_vae_dnn.toml --trials 40 --jobs 2 --data-root ../shared/data
      tinyad search --csv flows.csv --label is_attack --trials 20
    """
    from . import missing_build_modules
    from .datasets import resolve_data_root
    from .search import report
    from .search.run import SearchError, csv_recipe, load_raw, run_search

    missing = missing_build_modules()
    if missing:
        raise click.ClickException(f"searching needs the build extra: pip install 'tinyad[train,search]' "
                                   f"(missing: {', '.join(missing)})")
    if (recipe is None) == (csv_path is None):
        raise click.UsageError("give either RECIPE or --csv FILE --label COLUMN")
    if csv_path:
        if not label:
            raise click.UsageError("--csv needs --label (the column that says which rows are normal)")
        raw, path = csv_recipe(Path(csv_path), label, time_column, template)
    else:
        path = Path(recipe)
        raw = load_raw(path)
        if label:
            raw.setdefault("data", {})["label"] = label
    if split_method:
        split = raw.setdefault("split", {})
        split["method"] = split_method
        split["also_report"] = [m for m in split.get("also_report", []) if m != split_method]
        raw["name"] = f"{raw.get('name') or path.stem}_{split_method}"
    relative = raw.get("data", {}).get("relative_to", "data_root") == "data_root"
    root = resolve_data_root(data_root) if relative else Path(".")
    name = raw.get("name") or path.stem
    out = Path(out) if out else Path("build") / "search" / str(name)
    result = run_search(raw, path, root, out, trials, jobs, storage, study_name, timeout, not no_build,
                        _search_progress())
    failed = [r for r in result.rows if r["state"] == "FAIL"]
    click.echo(f"study '{result.study}' ({result.storage}): {len(result.rows)} trials, {len(failed)} failed, "
               f"{sum(1 for r in result.rows if r['state'] == 'COMPLETE' and not r['feasible'])} over a limit "
               f"(max {result.limits['max_bytes']} B, p50 {result.limits['max_p50_us']:g} us)")
    for row in failed[:5]:
        click.echo(f"  trial {row['trial']} failed: {row['failure'][:160]}")
    click.echo("Pareto front (int8, mean over validation folds; * chosen):")
    for line in report.table_lines(result.front, result.chosen):
        click.echo("  " + line)
    click.echo(f"wrote {result.files['pareto_csv']}, {result.files['trials_csv']}, {result.files['plot']}")
    if result.chosen is None:
        raise SearchError("no feasible trial: nothing to choose; see trials.csv (raise --trials, or widen the "
                          "[search] space or limits)")
    click.echo(f"chosen: trial {result.chosen['trial']} -> {result.chosen_path}")
    if result.build_error:
        raise SearchError(f"the final build of {result.chosen_path} failed: {result.build_error}")
    b = result.build
    if b:
        xgb, every = (("-" if v is None else f"{v:.4f}") for v in (b["xgboost_f1"], b["xgboost_all_features_f1"]))
        click.echo(f"final build on the test part ({b['test_rows']} rows, scored once): int8 F1 {b['int8_f1']:.4f} "
                   f"(float {b['float_f1']:.4f}, agreement {b['agreement']:.4f}); XGBoost F1 {xgb} (same features "
                   f"and rows), {every} (every feature); int8 {b['int8_bytes']} B, "
                   f"p50 {b['p50_us']:.2f} us; bundle {b['bundle']}")
        for method, split in b["splits"].items():
            click.echo(f"  split '{method}': int8 F1 {split['int8_f1']:.4f}; XGBoost F1 "
                       f"{split['xgboost_all_features_f1']:.4f} (every feature)")

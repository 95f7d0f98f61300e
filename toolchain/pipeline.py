"""The build as stages with files on disk between them, so a user can rerun one.

Work directory layout (``--work``)::

    features.json            select-features: ranking, k-sweep, leakage check, XGBoost baseline
    model.h5, train.json     train: deployable Keras model, scaler, float threshold
    model_float.tflite, model.tflite, representative.npy, quantize.json
    verify.json              verify: Keras / float / int8 metrics and the gate

``build`` runs every stage, measures any extra splits the recipe names, and writes the bundle.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from firmware_host import __version__
from firmware_host import manifest as mf
from firmware_host.errors import RecipeError
from firmware_host.interpreter import load_runtime

from . import baselines, distill, metrics, remedies
from . import features as feats
from .bundle import check_destination, golden_vectors, write_bundle
from .compare import comparison_rows, detector_latency, nab_cell, nab_corpus_lines, series_nab
from .plots import plot_report
from .prepare import Prepared, prepare
from .quantize import quantize, representative_rows
from .recipe import Recipe
from .train import TrainResult, keras_scores, model_inputs, part_truth, train
from .verify import check_gate, verify

FEATURES_JSON, TRAIN_JSON, KERAS_MODEL = "features.json", "train.json", "model.h5"
QUANTIZE_JSON, VERIFY_JSON, REPRESENTATIVE = "quantize.json", "verify.json", "representative.npy"
SCORES, PLOT = "test_scores.npz", "report.png"


def _say(progress, stage: str, message: str) -> None:
    if progress:
        progress(stage, 0, 0, {"message": message})


def _read_json(work: Path, name: str, needs: str) -> dict:
    try:
        return json.loads((work / name).read_text())
    except FileNotFoundError:
        raise RecipeError(f"{work / name} is missing: run 'tinyad {needs}' with the same --work first") from None


def _top_k(ranking: list[dict], k: int) -> list[str]:
    names = [row["feature"] for row in ranking]
    return names if k in (0, None) or k >= len(names) else names[:k]


# -- select-features ---------------------------------------------------------------------------

def select_features(prep: Prepared, recipe: Recipe, progress=None, sweep: bool = True) -> dict:
    """Rank features with XGBoost gain, keep the top k, and sweep k (detector F1 on validation, int8 size)."""
    spec = recipe.features
    train_attack = prep.is_attack[prep.parts["train"]]
    if prep.split.get("method") == "probation" or not 0 < train_attack.sum() < len(train_attack):
        # Nothing to rank against (e.g. NAB: the training prefix is all normal): keep every feature.
        names = list(prep.dataset.features.columns)
        return {"ranking": [{"feature": n, "gain": None} for n in names], "selected": names, "top_k": 0,
                "note": "the training part holds one class only: no XGBoost ranking, every feature kept",
                "leakage": None, "xgboost_baseline": None, "sweep": []}
    _say(progress, "select-features", f"ranking {prep.dataset.features.shape[1]} features with XGBoost")
    ranking = feats.rank_features(prep, spec.xgb_rounds, recipe.seed)
    selected = _top_k(ranking, spec.top_k)
    result = {"ranking": ranking, "selected": selected, "top_k": spec.top_k,
              "leakage": feats.leakage_check(prep, spec.xgb_rounds, recipe.seed),
              "xgboost_baseline": {"features": len(ranking),
                                   **feats.xgb_baseline(prep, _top_k(ranking, 0), spec.xgb_rounds, recipe.seed)},
              "sweep": []}
    if sweep:
        for k in spec.sweep:
            chosen = _top_k(ranking, k)
            _say(progress, "select-features", f"k-sweep: k={k or 'all'} ({len(chosen)} features)")
            trained = train(prep, chosen, recipe, None, epochs=spec.sweep_epochs)
            q = _convert_only(prep, trained, recipe)
            x_val, pos_val = model_inputs(prep, trained, "validation")
            val_scores, _ = keras_scores(recipe, trained.model, x_val, trained.score_params)
            attack, _ = part_truth(prep, "validation", pos_val)
            m = metrics.detection_metrics(attack, val_scores, val_scores > trained.threshold_float)
            result["sweep"].append({"k": k or len(ranking), "features": len(chosen), "validation_f1": m["f1"],
                                    "validation_roc_auc": m["roc_auc"], "int8_size_bytes": q.size_bytes["int8"],
                                    "float_size_bytes": q.size_bytes["float"], "epochs": spec.sweep_epochs})
    return result


def _convert_only(prep: Prepared, trained: TrainResult, recipe: Recipe):
    x_train, pos_train = model_inputs(prep, trained, "train")
    attack, _ = part_truth(prep, "train", pos_train)
    rep, origin = representative_rows(x_train, attack, recipe.quantize, recipe.seed, trained.scaler.clip)
    return quantize(trained.model, rep, origin, recipe.quantize)


def stage_select_features(recipe: Recipe, data_root: Path, work: Path, progress=None) -> dict:
    prep = prepare(recipe, data_root)
    result = select_features(prep, recipe, progress)
    work.mkdir(parents=True, exist_ok=True)
    mf.write_json(work / FEATURES_JSON, result)
    return result


# -- train -------------------------------------------------------------------------------------

def stage_train(recipe: Recipe, data_root: Path, work: Path, progress=None) -> dict:
    selected = _read_json(work, FEATURES_JSON, "select-features")["selected"]
    prep = prepare(recipe, data_root)
    trained = train(prep, selected, recipe, progress)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        trained.model.save(work / KERAS_MODEL)
    (work / distill.TEACHER_FILE).unlink(missing_ok=True)   # a teacher from an earlier run must not linger
    if trained.teacher is not None:
        trained.teacher.save(work)
    info = {"features": trained.features, "scaler": trained.scaler.__dict__, "threshold_float": trained.threshold_float,
            "parameters": trained.parameters, "history": trained.history, "window": trained.window,
            "score_params": trained.score_params, "fit": trained.fit}
    mf.write_json(work / TRAIN_JSON, info)
    return info


def _load_trained(work: Path) -> TrainResult:
    from .keras_env import import_tf

    info = _read_json(work, TRAIN_JSON, "train")
    _, keras = import_tf()
    model = keras.models.load_model(work / KERAS_MODEL, compile=False)
    fit = info.get("fit", {})
    teacher = distill.load_teacher(work, fit["distillation"]["classes"]) if "distillation" in fit else None
    return TrainResult(model, mf.Scaler(**info["scaler"]), info["features"], info["threshold_float"],
                       info["parameters"], info["history"], info.get("window", 1), info.get("score_params", {}),
                       fit, teacher)


# -- quantize ----------------------------------------------------------------------------------

def stage_quantize(recipe: Recipe, data_root: Path, work: Path, progress=None) -> dict:
    trained = _load_trained(work)
    prep = prepare(recipe, data_root)
    _say(progress, "quantize", "converting to float32 and int8 TFLite")
    info = _save_quantized(work, _convert_only(prep, trained, recipe))
    mf.write_json(work / QUANTIZE_JSON, info)
    return info


def _save_quantized(work: Path, q) -> dict:
    """Write a conversion's models and representative rows to ``work``; returns quantize.json's content."""
    (work / mf.FLOAT_MODEL_FILE).write_bytes(q.float_model)
    (work / mf.MODEL_FILE).write_bytes(q.int8_model)
    np.save(work / REPRESENTATIVE, q.representative)
    info = {"ops": q.ops, "size_bytes": q.size_bytes, "weight_bytes": q.weight_bytes,
            "weight_ratio": q.weight_bytes["int8"] / max(q.weight_bytes["float"], 1),
            "representative": {"rows": int(len(q.representative)), "origin": q.representative_origin,
                               "file": REPRESENTATIVE}}
    return info


# -- verify ------------------------------------------------------------------------------------

def stage_verify(recipe: Recipe, data_root: Path, work: Path, progress=None, gate: bool = True) -> dict:
    trained = _load_trained(work)
    _read_json(work, QUANTIZE_JSON, "quantize")
    prep = prepare(recipe, data_root)
    _say(progress, "verify", "scoring the test split with Keras, float TFLite and int8 TFLite")
    report, scores = verify(prep, trained, work / mf.FLOAT_MODEL_FILE, work / mf.MODEL_FILE, recipe)
    mf.write_json(work / VERIFY_JSON, report)
    np.savez(work / SCORES, **scores)
    if gate:
        check_gate(report)
    return report


def stage_quantize_verified(recipe: Recipe, data_root: Path, work: Path, progress=None) -> tuple[dict, dict]:
    """quantize and verify, then the quantization remedies while a gate fails (toolchain/remedies.py).
    The kept attempt lands in ``work``; raises QuantizationError when no attempt passes.
    Returns (quantize info with every attempt under ``remedies``, verify report)."""
    trained = _load_trained(work)
    prep = prepare(recipe, data_root)
    _say(progress, "quantize", "converting to float32 and int8 TFLite, then verifying on the test split")
    outcome = remedies.quantize_verified(prep, trained, recipe, progress)
    info = _save_quantized(work, outcome.quantized)
    info["representative"].update(outcome.calibration())
    info["remedies"] = outcome.summary()
    mf.write_json(work / QUANTIZE_JSON, info)
    mf.write_json(work / VERIFY_JSON, outcome.report)
    np.savez(work / SCORES, **outcome.scores)
    outcome.raise_if_failed()
    return info, outcome.report


# -- build -------------------------------------------------------------------------------------

def _versions() -> dict:
    from importlib import metadata

    found = {"tinyad": __version__, "python": platform.python_version(), "interpreter": load_runtime().describe()}
    for dist in ("tensorflow", "tensorflow-cpu", "tf-keras", "xgboost", "xgboost-cpu", "scikit-learn", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def _other_split(recipe: Recipe, data_root: Path, method: str, progress) -> dict:
    """Train, convert and verify the same recipe on another split, for the report."""
    prep = prepare(recipe, data_root, split_method=method)
    _say(progress, f"split {method}", "ranking features and training on this split")
    chosen = select_features(prep, recipe, None, sweep=False)
    trained = train(prep, chosen["selected"], recipe, progress)
    # The agreement gate holds on every split a build reports, with the same remedies.
    outcome = remedies.quantize_verified(prep, trained, recipe, progress, primary=False,
                                         where=f"on the '{method}' split")
    outcome.raise_if_failed()
    return {"split": prep.split, "features": chosen["selected"], "verify": outcome.report,
            "xgboost_baseline": chosen["xgboost_baseline"],
            "baselines": baselines.run_all(prep, trained, recipe, names=["xgboost"]),   # same features and rows
            "quantize": {"calibration": outcome.calibration(), "remedies": outcome.summary()}}


def build(recipe: Recipe, data_root: Path, out: Path, work: Path, progress=None) -> dict:
    """Every stage, then the bundle at ``out`` (written atomically). Returns the report."""
    started = time.perf_counter()
    check_destination(out)
    work.mkdir(parents=True, exist_ok=True)
    features = stage_select_features(recipe, data_root, work, progress)
    train_info = stage_train(recipe, data_root, work, progress)
    quant_info, verify_report = stage_quantize_verified(recipe, data_root, work, progress)
    prep = prepare(recipe, data_root)
    trained = _load_trained(work)
    report = {"recipe": recipe.to_dict(), "data": _data_summary(prep), "split": prep.split, "features": features,
              "train": {"parameters": train_info["parameters"], "epochs_run": _epochs_run(train_info["history"]),
                        "window": train_info.get("window", 1), "score_fit": train_info.get("fit", {}),
                        "distillation": train_info.get("fit", {}).get("distillation")},
              "quantize": quant_info, "verify": verify_report,
              "baselines": baselines.run_all(prep, trained, recipe), "splits": {}}
    for method in recipe.split.also_report:
        if method != recipe.split.method:
            report["splits"][method] = _other_split(recipe, data_root, method, progress)
    check_gate(verify_report)
    plot_report(report, dict(np.load(work / SCORES)), work / PLOT)
    x_test, _ = model_inputs(prep, trained, "test")
    golden = golden_vectors(work / mf.MODEL_FILE, x_test, recipe.detector.kind, verify_report["threshold_int8"],
                            recipe.quantize.golden_rows, recipe.seed, trained.score_params)
    manifest = _manifest(recipe, prep, trained, quant_info, verify_report, work)
    _say(progress, "compare", "measuring latency for the comparison table")
    report["compare"] = comparison_rows(report, detector_latency(work))
    report["build_seconds"] = time.perf_counter() - started
    files = {mf.MODEL_FILE: (work / mf.MODEL_FILE).read_bytes(),
             mf.FLOAT_MODEL_FILE: (work / mf.FLOAT_MODEL_FILE).read_bytes(),
             REPRESENTATIVE: (work / REPRESENTATIVE).read_bytes(),
             PLOT: (work / PLOT).read_bytes()}
    write_bundle(out, files, manifest, report, golden)
    return report


def _epochs_run(history: dict) -> dict:
    if "loss" in history:
        return {"model": len(history["loss"])}
    return {part: len(h.get("loss", [])) for part, h in history.items()}


def _data_summary(prep: Prepared) -> dict:
    values, counts = np.unique(prep.dataset.classes, return_counts=True)
    return {"name": prep.dataset.name, "sources": prep.dataset.sources, "citation": prep.dataset.citation,
            "rows": int(len(prep.dataset.classes)), "candidate_features": int(prep.dataset.features.shape[1]),
            "classes": {str(v): int(c) for v, c in zip(values, counts)}}


def _manifest(recipe, prep, trained, quant_info, verify_report, work) -> mf.Manifest:
    from .convert import io_quantization

    (in_s, in_z), (out_s, out_z), in_shape, out_shape = io_quantization((work / mf.MODEL_FILE).read_bytes())
    one_hot = {name: list(prep.dataset.one_hot[name]) for name in trained.features if name in prep.dataset.one_hot}
    categories = {column: list(prep.dataset.categories[column]) for column in sorted({c for c, _ in one_hot.values()})}
    models = verify_report["models"]
    return mf.Manifest(
        name=recipe.name, detector=recipe.detector.kind, features=trained.features, scaler=trained.scaler,
        input_quantization=mf.Quantization(in_s, in_z), output_quantization=mf.Quantization(out_s, out_z),
        threshold=verify_report["threshold_int8"], threshold_float=verify_report["threshold_float"],
        classes=prep.class_names, normal_class=prep.class_names[0], sha256="", input_shape=in_shape,
        output_shape=out_shape, one_hot=one_hot, kernels=load_runtime().kernels, window=trained.window,
        score_params=trained.score_params, categories=categories,
        adaptive=verify_report["adaptive"]["params"]["int8"] if "adaptive" in verify_report else {},
        metrics={"float": _headline(models["float"]), "int8": _headline(models["int8"]),
                 "keras": _headline(models["keras"]), "int8_vs_float": verify_report["int8_vs_float"],
                 "gates": verify_report["gates"],
                 **({"teacher": verify_report["teacher"]} if "teacher" in verify_report else {})},
        size_bytes=quant_info["size_bytes"], weight_bytes=quant_info["weight_bytes"], recipe=recipe.to_dict(),
        split=prep.split, calibration=quant_info["representative"], versions=_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _headline(m: dict) -> dict:
    keys = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "confusion_matrix",
            "threshold")
    headline = {k: m[k] for k in keys}
    if "windows" in m:      # labelled anomaly windows (NAB): the figures, not the per-window detail
        headline["windows"] = {k: v for k, v in m["windows"].items() if k != "per_window"}
    return headline


# -- one bundle per series -----------------------------------------------------------------------

SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"


def series_paths(recipe: Recipe, data_root: Path) -> list[str]:
    """The series a ``per_series`` recipe names: its path glob(s), expanded, sorted, relative
    to the same base as the recipe's data."""
    import glob

    base = Path(recipe.path).resolve().parent if recipe.data.relative_to == "recipe" else Path(data_root)
    patterns = recipe.data.path if isinstance(recipe.data.path, list) else [recipe.data.path]
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(base / pattern)))
        if not matches:
            raise RecipeError(f"{recipe.path}: [data] path {pattern!r} matches no file under {base}")
        found.extend(str(Path(m).relative_to(base)) for m in matches)
    return found


def build_each(recipe: Recipe, data_root: Path, out: Path, work: Path, progress=None) -> dict:
    """Build one bundle per series into ``out/<series>/`` and a summary table (``summary.md``,
    ``summary.json``). A series that fails its build or gate is recorded as such; the others
    still build."""
    import dataclasses

    from firmware_host.errors import TinyadError

    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for path in series_paths(recipe, data_root):
        stem = Path(path).stem
        _say(progress, "series", f"{stem}")
        one = dataclasses.replace(recipe, name=f"{recipe.name}-{stem}",
                                  data=dataclasses.replace(recipe.data, path=path, per_series=False))
        try:
            report = build(one, data_root, out / stem, work / stem, progress)
            rows.append(series_row(stem, report))
        except TinyadError as exc:
            rows.append({"series": stem, "error": str(exc)})
    summary = {"recipe": recipe.to_dict(), "series": rows}
    _write_atomic(out / SUMMARY_JSON, json.dumps(summary, indent=2, default=float) + "\n")
    _write_atomic(out / SUMMARY_MD, summary_markdown(rows) + "\n\nAll series as one NAB corpus (run verdicts; "
                  "standard / reward low FP / reward low FN):\n\n"
                  + "\n".join(nab_corpus_lines(rows)) + "\n")
    return summary


def series_row(name: str, report: dict) -> dict:
    """One line of a per-series summary, from a build report."""
    v = report["verify"]
    row = {"series": name, "test_rows": v["test_rows"], "passed": v["passed"],
           "int8_bytes": report["quantize"]["size_bytes"]["int8"], "parameters": report["train"]["parameters"]}
    for model in ("float", "int8"):
        m = v["models"][model]
        row[f"{model}_f1"] = m["f1"]
        w = m.get("windows")
        if w:
            row[f"{model}_windows"] = f"{w['detected']}/{w['windows']}"
            row[f"{model}_false_alarms_per_1000"] = w["false_alarms_per_1000"]
            row[f"{model}_mean_delay_rows"] = w.get("mean_delay_rows")
    row["baselines"] = {name: {"windows": f"{b['windows']['detected']}/{b['windows']['windows']}",
                               "false_alarms_per_1000": b["windows"]["false_alarms_per_1000"]}
                        for name, b in report.get("baselines", {}).items() if "windows" in b}
    row.update(series_nab(report))
    return row


def summary_markdown(rows: list[dict]) -> str:
    head = ("| series | test rows | windows float | windows int8 | false alarms /1000 (int8) | "
            "mean delay, rows (int8) | NAB std float / int8 | F1 float | F1 int8 | int8 B | gate | "
            "baselines: windows, false alarms /1000 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['series']} | failed: {r['error'][:120]} |" + " |" * 10)
            continue
        delay = r.get("int8_mean_delay_rows")
        lines.append(f"| {r['series']} | {r['test_rows']} | {r.get('float_windows', '-')} | "
                     f"{r.get('int8_windows', '-')} | {r.get('int8_false_alarms_per_1000', float('nan')):.2f} | "
                     f"{'-' if delay is None else f'{delay:.0f}'} | {nab_cell(r)} | {r['float_f1']:.3f} | "
                     f"{r['int8_f1']:.3f} | "
                     f"{r['int8_bytes']} | {'pass' if r['passed'] else 'FAIL'} | {_baseline_cell(r)} |")
    return "\n".join(lines)


SHORT_NAMES = {"isolation_forest": "IF", "one_class_svm": "OCSVM", "windowed_gaussian": "z-score",
               "random_forest": "RF", "xgboost": "XGB"}


def _baseline_cell(row: dict) -> str:
    return "; ".join(f"{SHORT_NAMES.get(name, name)} {b['windows']}, {b['false_alarms_per_1000']:.1f}"
                     for name, b in row.get("baselines", {}).items())


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)

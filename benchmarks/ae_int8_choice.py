"""Choose an AE recipe's int8-facing settings on validation: for each setting, train on each split,
convert with the recipe's own calibration (no remedy), and print int8-vs-float verdict agreement
and F1 on the validation rows. The test part is never scored.

    python benchmarks/ae_int8_choice.py models/sdn_ddos_ae.toml \\
        --try "detector.train_noise=0.0" --try "detector.train_noise=0.05"

Each ``--try`` is one setting: comma-separated ``section.key=value`` overrides of the recipe
(values in TOML syntax: ``detector.hidden=[16]``, ``quantize.calibrate_on="train"``). Thresholds
follow the build's rules: float's from the Keras validation scores, int8's by the recipe's rule on
the int8 validation scores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from firmware_host.interpreter import load_runtime
from firmware_host.runner import TFLiteModel, model_scores
from toolchain import metrics, remedies
from toolchain.datasets import resolve_data_root
from toolchain.pipeline import select_features
from toolchain.prepare import prepare
from toolchain.quantize import quantize, representative_rows
from toolchain.recipe import parse_recipe
from toolchain.search.space import apply
from toolchain.train import calibrate_threshold, model_inputs, part_truth, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def with_overrides(path: Path, raw: dict, setting: str, seed: int | None = None):
    """The recipe at ``path`` (its TOML table ``raw``) with ``section.key=value`` overrides
    (comma-separated; values in TOML syntax) and ``seed``, read by the recipe's own checks."""
    overrides = {}
    for item in filter(None, (part.strip() for part in _split_top(setting))):
        key, value = item.split("=", 1)
        section, name = key.strip().split(".")
        overrides[(section, name)] = tomllib.loads(f"v = {value.strip()}")["v"]
    table = apply(raw, overrides)
    if seed is not None:
        table["seed"] = seed
    return parse_recipe(table, path)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets (``detector.hidden=[32,16]`` stays whole)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def validation_figures(recipe, prep) -> dict:
    """Train, convert (the recipe's calibration) and score the validation rows with float and int8 TFLite."""
    chosen = select_features(prep, recipe, None, sweep=False)
    trained = train(prep, chosen["selected"], recipe)
    x_val, positions = model_inputs(prep, trained, "validation")
    attack, _ = part_truth(prep, "validation", positions)
    pool = remedies.calibration_pool(prep, trained, recipe.quantize)
    rows, origin = representative_rows(pool[0], pool[1], recipe.quantize, recipe.seed, trained.scaler.clip)
    converted = quantize(trained.model, rows, origin, recipe.quantize)
    kind, runtime = recipe.detector.kind, load_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        scores = {}
        for name, blob in (("float", converted.float_model), ("int8", converted.int8_model)):
            path = Path(tmp) / f"{name}.tflite"
            path.write_bytes(blob)
            scores[name] = model_scores(TFLiteModel(path, runtime), x_val, kind, 0, trained.score_params)[0]
    flags = {"float": scores["float"] > trained.threshold_float,
             "int8": scores["int8"] > calibrate_threshold(recipe.threshold, attack, scores["int8"])}
    f1 = {name: metrics.detection_metrics(attack, scores[name], flags[name])["f1"] for name in flags}
    return {"agreement": float(np.mean(flags["float"] == flags["int8"])), "float_f1": f1["float"],
            "int8_f1": f1["int8"], "float_roc_auc": metrics.roc_auc(attack, scores["float"]),
            "int8_bytes": len(converted.int8_model), "rows": len(x_val)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--try", dest="settings", action="append", default=None,
                        help="comma-separated section.key=value overrides; repeat for each setting "
                             "[default: the recipe as it is]")
    parser.add_argument("--splits", default=None,
                        help="comma-separated split methods [default: the recipe's and its also_report]")
    parser.add_argument("--seed", type=int, default=None, help="seed instead of the recipe's (it also draws the "
                                                               "random split) [default: the recipe's]")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    path = Path(args.recipe)
    raw = tomllib.loads(path.read_text())
    base = with_overrides(path, raw, "", args.seed)
    splits = args.splits.split(",") if args.splits else [base.split.method, *base.split.also_report]
    print(f"{base.name}, seed {base.seed}: validation rows only (recipe's calibration, no remedy)")
    for setting in args.settings or [""]:
        recipe = with_overrides(path, raw, setting, args.seed)
        root = resolve_data_root(args.data_root) if recipe.data.relative_to == "data_root" else Path(".")
        for split in splits:
            found = validation_figures(recipe, prepare(recipe, root, split_method=split))
            print(f"  {setting or '(recipe)':<60} {split:<6} agreement {100 * found['agreement']:6.2f} % of "
                  f"{found['rows']}   F1 float {found['float_f1']:.4f} int8 {found['int8_f1']:.4f}   "
                  f"float ROC-AUC {found['float_roc_auc']:.4f}   int8 {found['int8_bytes']} B", flush=True)


if __name__ == "__main__":
    main()

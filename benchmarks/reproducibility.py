"""Rebuild a recipe and print how far the builds' figures fall apart.

    python benchmarks/reproducibility.py models/default.toml --times 2
    python benchmarks/reproducibility.py models/default.toml --seeds 42,43,44

``--times N`` builds the recipe N times, each in a fresh process with the recipe's own seed, and
prints, per metric of the manifest (int8, float and Keras test metrics, int8-vs-float agreement,
the teacher's agreement for a distilled recipe) and of every extra split in report.json, the
largest difference between builds, then whether the int8 model files are byte-identical.
``--seeds`` builds once per seed instead and prints each metric's mean, min and max: the spread
to report where one seed's figure would be a lucky draw. The seed also draws the random split,
so that spread includes which rows land in the test part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD = """
import dataclasses, sys
from pathlib import Path
from toolchain.datasets import resolve_data_root
from toolchain.pipeline import build
from toolchain.recipe import load_recipe
recipe_path, seed, out, work, data_root = sys.argv[1:]
recipe = load_recipe(recipe_path)
if seed:
    recipe = dataclasses.replace(recipe, seed=int(seed))
root = resolve_data_root(data_root or None) if recipe.data.relative_to == "data_root" else Path(".")
build(recipe, root, Path(out), Path(work))
"""
HEADLINE = ("accuracy", "f1", "roc_auc", "pr_auc", "threshold")


def build_once(recipe: str, seed: int | None, folder: Path, data_root: str | None) -> Path:
    out = folder / "bundle"
    subprocess.run([sys.executable, "-c", BUILD, recipe, "" if seed is None else str(seed), str(out),
                    str(folder / "work"), data_root or ""], check=True)
    return out


def figures(bundle: Path) -> dict:
    """name -> value of every figure compared between builds."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    found = {}
    for model in ("keras", "float", "int8"):
        for key in HEADLINE:
            found[f"{model}.{key}"] = manifest["metrics"][model][key]
    found["int8_vs_float.agreement"] = manifest["metrics"]["int8_vs_float"]["verdict_agreement"]
    teacher = manifest["metrics"].get("teacher")
    if teacher:
        found["teacher.f1"] = teacher["f1"]
        found["teacher.int8_agreement"] = teacher["int8_agreement"]
    for method, other in report.get("splits", {}).items():
        for model in ("float", "int8"):
            found[f"{method}.{model}.f1"] = other["verify"]["models"][model]["f1"]
        found[f"{method}.int8_vs_float.agreement"] = other["verify"]["int8_vs_float"]["verdict_agreement"]
    found["int8_bytes"] = manifest["size_bytes"]["int8"]
    return found


def model_sha256(bundle: Path) -> str:
    return hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--times", type=int, default=2, help="builds with the recipe's seed [default: 2]")
    group.add_argument("--seeds", default=None, help="comma-separated seeds: one build each, print the spread")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None] * args.times
    results, hashes = [], []
    with tempfile.TemporaryDirectory(prefix="tinyad-repro-") as tmp:
        for i, seed in enumerate(seeds):
            print(f"build {i + 1}/{len(seeds)}{'' if seed is None else f' (seed {seed})'} ...", file=sys.stderr)
            bundle = build_once(args.recipe, seed, Path(tmp) / str(i), args.data_root)
            results.append(figures(bundle))
            hashes.append(model_sha256(bundle))
    names = sorted(set().union(*results))
    if args.seeds:
        print(f"{args.recipe}: spread over seeds {args.seeds}")
        print(f"{'figure':<36}{'mean':>12}{'min':>12}{'max':>12}")
        for name in names:
            values = [r[name] for r in results if name in r]
            print(f"{name:<36}{sum(values) / len(values):>12.4f}{min(values):>12.4f}{max(values):>12.4f}")
    else:
        print(f"{args.recipe}: {len(results)} builds, seed as in the recipe")
        print(f"{'figure':<36}{'build 1':>10}{'max |diff|':>12}")
        for name in names:
            values = [r[name] for r in results if name in r]
            print(f"{name:<36}{values[0]:>10.4f}{max(values) - min(values):>12.2g}")
    same = len(set(hashes)) == 1
    print(f"int8 model.tflite: {'byte-identical in every build' if same else 'differs between builds'} "
          f"({', '.join(h[:12] for h in hashes)})")


if __name__ == "__main__":
    main()

"""Choose a recipe's int8 calibration rows on validation: train once on a split, convert with
each ``[quantize] calibrate_on`` setting, and print int8-vs-float verdict agreement on the
validation rows (the choice) beside the test rows (reported, not used).

    python benchmarks/calibration_choice.py models/sdn_ddos_vae_dnn.toml --split time

Prints one line per setting; no remedy runs, so the figures are each setting's own.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from toolchain import remedies
from toolchain.datasets import resolve_data_root
from toolchain.pipeline import select_features
from toolchain.prepare import prepare
from toolchain.recipe import load_recipe
from toolchain.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--split", default=None, help="split method [default: the recipe's]")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    root = resolve_data_root(args.data_root) if recipe.data.relative_to == "data_root" else Path(".")
    prep = prepare(recipe, root, split_method=args.split)
    chosen = select_features(prep, recipe, None, sweep=False)
    trained = train(prep, chosen["selected"], recipe)
    print(f"{recipe.name}, split {prep.split['method']}: int8 vs float verdict agreement (recipe's own "
          f"conversion, no remedy)")
    for setting in ("train", "train_validation"):
        spec = dataclasses.replace(recipe.quantize, calibrate_on=setting)
        one = dataclasses.replace(recipe, quantize=spec, verify=dataclasses.replace(recipe.verify, remedies=False))
        outcome = remedies.quantize_verified(prep, trained, one, primary=False)
        report = outcome.report
        print(f"  calibrate_on = {setting:<17} validation {100 * report['int8_vs_float_validation']:.2f} %   "
              f"test {100 * report['int8_vs_float']['verdict_agreement']:.2f} %   "
              f"int8 test F1 {report['models']['int8']['f1']:.4f} (float {report['models']['float']['f1']:.4f})")


if __name__ == "__main__":
    main()

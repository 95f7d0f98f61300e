"""AE-LSTM size/quality trade-off: the paper's 64 LSTM units against smaller ones, one run.

Builds models/nab_machine_temperature_ae_lstm.toml with lstm_units = 64, 32, 16, 8 (everything
else as in the recipe) and prints, per width: parameters, int8 bytes, windows detected and
false alarms per 1,000 points (int8), and the single-window int8 invoke p50/p99 from the run
side's benchmark. The AE-LSTM paper reports 75 ms per batch; ours is per window, batch 1.

    python benchmarks/ae_lstm_sizes.py [--data-root ../shared/data] [--units 64 32 16 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--recipe", default=str(ROOT / "models" / "nab_machine_temperature_ae_lstm.toml"))
    parser.add_argument("--units", type=int, nargs="+", default=[64, 32, 16, 8])
    args = parser.parse_args()

    from firmware_host.bench import bench_bundle
    from toolchain.datasets import resolve_data_root
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    base = load_recipe(args.recipe)
    root = resolve_data_root(args.data_root)
    print(f"{'units':>5} {'params':>7} {'int8 B':>7} {'float B':>8} {'windows':>8} {'FA/1000':>8} "
          f"{'int8 F1':>8} {'p50 us':>7} {'p99 us':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for units in args.units:
            recipe = dataclasses.replace(base, name=f"{base.name}-{units}",
                                         detector=dataclasses.replace(base.detector, lstm_units=units))
            out = Path(tmp) / f"b{units}"
            report = build(recipe, root, out, Path(tmp) / f"w{units}")
            m = report["verify"]["models"]["int8"]
            w = m["windows"]
            bench = bench_bundle(out, invokes=1000)["int8"]
            print(f"{units:5d} {report['train']['parameters']:7d} {report['quantize']['size_bytes']['int8']:7d} "
                  f"{report['quantize']['size_bytes']['float']:8d} {w['detected']:>4}/{w['windows']:<3} "
                  f"{w['false_alarms_per_1000']:8.2f} {m['f1']:8.4f} {bench['invoke_us_p50']:7.1f} "
                  f"{bench['invoke_us_p99']:7.1f}", flush=True)


if __name__ == "__main__":
    main()

"""One NAB table: published detectors, our classical baselines and built tinyad bundles, all
scored by our NAB scorer (toolchain/nab_score.py) on the NAB series they cover.

    python benchmarks/nab_table.py [BUILD_FOLDER ...] [--nab ../shared/data/nab] [--data-root ../shared/data]

Rows:
- ``numenta``, ``windowedGaussian``, ``ARTime``: the published scores in ``nab/reference/``;
- ``ours: windowed_gaussian`` / ``ours: isolation_forest``: toolchain/baselines.py on each series'
  value, fitted label-free on NAB's probationary period (first 15 %, at most 750 rows; train :
  validation 80 : 20), verdicts at the 99th percentile of validation scores;
- ``tinyad <folder> (int8)``: every bundle under a build folder (one per series), run over its
  whole series through ``firmware_host.runner``, scored on ``unit_score`` (the [0, 1] adaptive
  level) when the bundle has one, else on its raw score; ``(float)``: the bundle's float model on
  the same rows, with float's own threshold or adaptive parameters from the build report.

Columns: NAB's three profiles with the threshold optimised over the corpus (NAB's convention),
then the same profiles for the fixed 0/1 verdicts (what a deployed detector reports).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from toolchain.nab_score import (PROFILES, REFERENCE_DETECTORS, nab_score_verdicts, nab_scores_all_profiles,
                                 probation_rows, read_windows, reference_corpus)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_SHARE = 0.8          # of the probationary rows; the rest chooses the verdict threshold
PERCENTILE = 99.0


def _series(nab: Path) -> dict:
    """``{name: (times, values)}`` of every series under ``nab/data`` (name = path under data/)."""
    import pandas as pd

    series = {}
    for path in sorted((nab / "data").rglob("*.csv")):
        frame = pd.read_csv(path)
        series[path.relative_to(nab / "data").as_posix()] = (
            pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[ns]"), frame["value"].to_numpy(np.float64))
    return series


def baseline_runs(values: np.ndarray, seed: int = 0) -> dict:
    """``{baseline: (scores per row, verdicts per row)}`` of one series, fitted on its probationary rows."""
    from toolchain.baselines import isolation_forest_scores, windowed_gaussian_scores
    from toolchain.recipe import ThresholdSpec

    probation = probation_rows(len(values))
    cut = int(TRAIN_SHARE * probation)
    train = values[:cut].reshape(-1, 1)
    x = (values.reshape(-1, 1) - train.mean()) / max(float(train.std()), 1e-9)
    spec, quiet = ThresholdSpec("percentile", PERCENTILE), np.zeros(probation - cut, dtype=bool)
    runs = {}
    for result in (windowed_gaussian_scores(x[:cut], None, x[cut:probation], quiet, x, threshold=spec),
                   isolation_forest_scores(x[:cut], None, x[cut:probation], quiet, x, seed=seed, threshold=spec)):
        runs[f"ours: {result.name}"] = (result.test_scores, result.alarms)
    return runs


def _bundle_series(bundle: Path, data_root: Path) -> Path:
    report = json.loads((bundle / "report.json").read_text())
    for candidate in (*map(Path, report["data"]["sources"]), data_root / report["recipe"]["data"]["path"]):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{bundle}: its series {report['data']['sources']} is not here")


def _int8_run(bundle: Path, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The bundle as ``tinyad run`` serves it: (scores, verdicts, which score column)."""
    from firmware_host.runner import Detector

    with Detector(bundle) as detector:
        verdicts = detector.stream().push(detector.prepare(raw))
    if verdicts.unit_score is not None:
        return verdicts.unit_score, verdicts.is_anomaly, "unit_score"
    return verdicts.scores, verdicts.is_anomaly, "score"


def _float_run(bundle: Path, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The bundle's float model over the same rows, with float's own threshold or adaptive
    parameters from the build report: (scores, verdicts, which score column)."""
    from firmware_host import adaptive, quant, scoring
    from firmware_host.interpreter import load_runtime
    from firmware_host.manifest import FLOAT_MODEL_FILE, load_manifest
    from firmware_host.preprocess import scale_rows
    from firmware_host.runner import TFLiteModel, model_scores
    from toolchain.windows import part_windows

    m = load_manifest(bundle)
    normal = m.classes.index(m.normal_class)
    x, positions = part_windows(scale_rows(raw, m.scaler), m.window)
    raw_scores, outputs, _, _ = model_scores(TFLiteModel(bundle / FLOAT_MODEL_FILE, load_runtime()), x, m.detector,
                                             normal, m.score_params)
    params = json.loads((bundle / "report.json").read_text())["verify"].get("adaptive", {}).get("params", {})
    scores, flags = np.full(len(raw), np.nan), np.zeros(len(raw), dtype=bool)
    if params.get("float"):
        scores[:] = 0.0
        q = m.input_quantization        # the window channels and range check read the int8 inputs
        windows = quant.quantize(x, q.scale, q.zero_point)
        scores[positions], flags[positions] = adaptive.unit_scores(raw_scores, params["float"], windows)
        return scores, flags, "unit_score"
    scores[positions] = raw_scores
    flags[positions] = scoring.decide(m.detector, raw_scores, outputs, m.threshold_float, normal,
                                      m.score_params).is_anomaly
    return scores, flags, "score"


def bundle_run(bundle: Path, data_root: Path) -> tuple[str, Path, dict]:
    """Run one bundle over its whole series: (series name under data/, NAB folder,
    ``{"int8" | "float": (scores, verdicts, score column)}``)."""
    import pandas as pd

    from firmware_host.manifest import load_manifest

    path = _bundle_series(bundle, data_root)
    data = next(p for p in path.parents if p.name == "data")
    raw = pd.read_csv(path)[load_manifest(bundle).features].to_numpy(np.float64)
    runs = {"int8": _int8_run(bundle, raw), "float": _float_run(bundle, raw)}
    return path.relative_to(data).as_posix(), data.parent, runs


def _row(name: str, files: dict, windows: dict, verdicts: dict | None = None, note: str = "") -> dict:
    row = {"scorer": name, "series": len(files), "note": note,
           "optimised": {p: r.score for p, r in nab_scores_all_profiles(files, windows).items()}}
    if verdicts is not None:
        fixed = {n: (files[n][0], v) for n, v in verdicts.items()}
        row["verdicts"] = {p: r.score for p, r in nab_score_verdicts(fixed, windows).items()}
    return row


def bundle_rows(folder: Path, data_root: Path, series: dict) -> list[dict]:
    """Two rows (int8, float) per folder of bundles (a per-series build's output), scored on the
    series it covers."""
    groups = {}
    for manifest in sorted(folder.rglob("manifest.json")):
        groups.setdefault(manifest.parent.parent, []).append(manifest.parent)
    rows = []
    for group, bundles in groups.items():
        per_model = {m: ({}, {}, set()) for m in ("int8", "float")}
        windows = {}
        for bundle in bundles:
            name, nab, runs = bundle_run(bundle, data_root)
            times = series[name][0] if name in series else _series(nab)[name][0]
            windows.update(read_windows(nab / "labels" / "combined_windows.json", [name]))
            for model, (scores, flags, column) in runs.items():
                files, verdicts, columns = per_model[model]
                files[name], verdicts[name] = (times, scores), flags
                columns.add(column)
        for model, (files, verdicts, columns) in per_model.items():
            rows.append(_row(f"tinyad {group.name} ({model})", files, windows, verdicts,
                             "scored on " + "/".join(sorted(columns))))
    return rows


def table(nab: Path, data_root: Path, folders: list[Path], progress=None) -> list[dict]:
    """Every row of the table, as data."""
    say = progress or (lambda message: None)
    rows = []
    for detector in REFERENCE_DETECTORS:
        files, windows = reference_corpus(nab, detector)
        rows.append(_row(detector, files, windows, note="published scores (NAB results/)"))
    series = _series(nab)
    windows = read_windows(nab / "labels" / "combined_windows.json", list(series))
    runs = {}
    for name, (_, values) in series.items():
        say(f"baselines on {name}")
        for scorer, run in baseline_runs(values).items():
            runs.setdefault(scorer, {})[name] = run
    for scorer, per_series in runs.items():
        files = {n: (series[n][0], scores) for n, (scores, _) in per_series.items()}
        rows.append(_row(scorer, files, windows, {n: flags for n, (_, flags) in per_series.items()},
                         "label-free, fitted on the probationary rows"))
    for folder in folders:
        say(f"bundles under {folder}")
        rows.extend(bundle_rows(folder, data_root, series))
    return rows


def lines(rows: list[dict]) -> list[str]:
    fmt = lambda v: "-" if v is None or v != v else f"{v:.1f}"
    short = " / ".join(("standard", "low FP", "low FN"))
    out = [f"| scorer | series | NAB {short} (optimised threshold) | verdicts: {short} | note |",
           "|---|---|---|---|---|"]
    for r in rows:
        best = " / ".join(fmt(r["optimised"][p]) for p in PROFILES)
        fixed = " / ".join(fmt(r["verdicts"][p]) for p in PROFILES) if "verdicts" in r else "-"
        out.append(f"| {r['scorer']} | {r['series']} | {best} | {fixed} | {r['note']} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="*", type=Path, help="folders holding built bundles (per-series builds)")
    parser.add_argument("--nab", type=Path, default=SHARED / "nab")
    parser.add_argument("--data-root", type=Path, default=SHARED)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = table(args.nab, args.data_root, args.build, progress=lambda m: print(f"... {m}", flush=True))
    print("\n".join(lines(rows)))
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()

"""`tinyad run` end to end, as a user runs it: rows/s on a dense and a temporal bundle (start-up
included), peak RSS on a 1,000,000-row CSV, and the live latency of rows piped in at 10 a second.

    python benchmarks/run_throughput.py [--baseline SRC] [--repeats 3] [--live-rows 200]

Each figure comes from a fresh `tinyad run` subprocess (bytecode cached, as after an install;
the best of ``--repeats`` runs). rows/s is given by the wall clock and by
the child's CPU time (user + sys): on a shared machine the wall clock also counts other
processes' turns, the CPU time does not. ``--baseline SRC`` runs the same measurements, in the
same run, with the firmware_host of another source tree (e.g. ``git worktree add /tmp/base
<commit>``) and prints the ratios. Bundles: ``tinyad build models/default.toml --out
build/default`` and ``tinyad build models/nab_machine_temperature_lstm.toml --out
build/nab_machine_temperature_lstm``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from live_latency import piped_latency  # noqa: E402
DATA = ROOT.parent / "shared" / "data"
SDN = DATA / "sdn_ddos" / "dataset_sdn.csv.gz"
NAB = DATA / "nab" / "data" / "realKnownCause" / "machine_temperature_system_failure.csv"
MILLION = 1_000_000
LIVE_RATE = 10.0            # rows per second written to the live run


PYCACHE = Path(tempfile.gettempdir()) / "tinyad_bench_pycache"


def user_env() -> dict:
    """The environment a user's shell gives ``tinyad``: bytecode cached (as after ``pip install``;
    kept out of the source tree), stdout block-buffered unless the program flushes it."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")}
    return {**env, "PYTHONPYCACHEPREFIX": str(PYCACHE)}


def tinyad(source: Path) -> list[str]:
    """The command that runs ``tinyad`` from a given source tree's firmware_host."""
    launch = f"import sys; sys.path.insert(0, {str(source)!r}); from firmware_host.cli import main; main()"
    return [sys.executable, "-c", launch]


def timed_run(command: list[str]) -> dict:
    """Run a command to completion: wall seconds, child CPU seconds, peak RSS (bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=user_env())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed ({proc.returncode}): {stderr.strip()}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_bytes": usage.ru_maxrss * 1024,
            "said": stderr.strip().splitlines()[-1]}


def throughput(source: Path, bundle: Path, data: Path, rows: int, repeats: int, out: Path) -> dict:
    """Best-of-``repeats`` rows/s of one bundle on one file (wall clock and CPU time)."""
    runs = [timed_run([*tinyad(source), "run", str(bundle), "--input", str(data), "--output", str(out)])
            for _ in range(repeats)]
    wall, cpu = min(r["wall"] for r in runs), min(r["cpu"] for r in runs)
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall, "rows_per_cpu_s": rows / cpu,
            "said": runs[0]["said"]}


def million_rows_csv(path: Path) -> Path:
    """A 1,000,000-row CSV of real SDN rows, repeated (written once, ~120 MB)."""
    if path.exists():
        return path
    with gzip.open(SDN, "rt", newline="") as handle:
        header, *rows = handle.read().splitlines(keepends=True)
    with open(path, "w", newline="") as out:
        out.write(header)
        for first in range(0, MILLION, len(rows)):
            out.writelines(rows[:min(len(rows), MILLION - first)])
    return path


def live_latency(source: Path, bundle: Path, rows: list[str], header: str) -> dict:
    """Rows written one at a time, ``LIVE_RATE`` a second, into ``tinyad run --input -``: the time
    from each row's newline to its verdict line (milliseconds; ``live_latency.py`` measures it)."""
    latency = piped_latency([*tinyad(source), "run", str(bundle), "--input", "-"], header, rows, LIVE_RATE,
                            env=user_env())
    return {"rows": len(rows), "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)), "max_ms": float(latency.max())}


def measure(source: Path, args, sdn_rows: int, nab_rows: int, live_rows: list[str], header: str,
            scratch: Path, temporal_bundle: Path) -> dict:
    result = {"dense": throughput(source, args.bundle, SDN, sdn_rows, args.repeats, scratch / "dense.csv"),
              "temporal": throughput(source, temporal_bundle, args.temporal_csv, nab_rows, args.repeats,
                                     scratch / "temporal.csv")}
    big = timed_run([*tinyad(source), "run", str(args.bundle), "--input", str(args.million),
                     "--output", str(scratch / "million.csv")])
    result["million"] = {"rows": MILLION, "peak_rss_mb": big["rss_bytes"] / 2 ** 20, "wall_s": big["wall"],
                         "rows_per_s": MILLION / big["wall"], "rows_per_cpu_s": MILLION / big["cpu"]}
    if live_rows and (source == ROOT or not args.skip_live_baseline):
        result["live"] = live_latency(source, args.bundle, live_rows, header)
    return result


def report(name: str, r: dict) -> list[str]:
    lines = [f"{name}:"]
    for kind, label in (("dense", "default bundle, SDN DDoS"), ("temporal", "temporal bundle")):
        t = r[kind]
        lines.append(f"  {label}: {t['rows']:,} rows in {t['wall_s']:.2f} s wall ({t['rows_per_s']:,.0f} rows/s), "
                     f"{t['cpu_s']:.2f} s CPU ({t['rows_per_cpu_s']:,.0f} rows/CPU-s), start-up included"
                     + (f" [{t['bundle']}]" if "bundle" in t else ""))
    m = r["million"]
    lines.append(f"  1,000,000-row CSV: peak RSS {m['peak_rss_mb']:.1f} MiB, {m['rows_per_s']:,.0f} rows/s wall, "
                 f"{m['rows_per_cpu_s']:,.0f} rows/CPU-s")
    if r.get("live"):
        v = r["live"]
        lines.append(f"  live, {v['rows']} rows at {LIVE_RATE:.0f}/s into --input -: newline -> verdict line "
                     f"p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms, max {v['max_ms']:.1f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "build" / "default")
    parser.add_argument("--temporal-bundle", type=Path, default=ROOT / "build" / "nab_machine_temperature_lstm")
    parser.add_argument("--temporal-csv", type=Path, default=NAB,
                        help="The series the temporal bundle scores (NAB machine temperature: NAB's Twitter "
                             "volume series of the issue is not among the shared data sets here).")
    parser.add_argument("--baseline-temporal-bundle", type=Path,
                        help="The temporal bundle the baseline scores (default: --temporal-bundle), e.g. the fused "
                             "LSTM bundle against an unrolled one (models/nab_machine_temperature_lstm_unrolled.toml).")
    parser.add_argument("--baseline", type=Path, help="Another source tree to measure the same way, e.g. HEAD~.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per throughput figure (best is reported).")
    parser.add_argument("--live-rows", type=int, default=200, help="Rows piped live (0: skip).")
    parser.add_argument("--skip-live-baseline", action="store_true",
                        help="Do not pipe live rows into the baseline (one that waits for a full batch "
                             "answers only when the input closes).")
    parser.add_argument("--million", type=Path, default=Path(tempfile.gettempdir()) / "tinyad_1m_rows.csv")
    parser.add_argument("--json", action="store_true", help="Print the measurements as JSON.")
    args = parser.parse_args()
    for bundle in (args.bundle, args.temporal_bundle):
        if not (bundle / "manifest.json").exists():
            raise SystemExit(f"{bundle}: no bundle there (build it: see this script's docstring)")
    million_rows_csv(args.million)
    with gzip.open(SDN, "rt", newline="") as handle:
        header, *rows = handle.read().splitlines(keepends=True)
    with open(args.temporal_csv) as handle:
        nab_rows = sum(1 for _ in handle) - 1
    live_rows = rows[:args.live_rows]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        sources = [("after", ROOT)] + ([("before", args.baseline.resolve())] if args.baseline else [])
        for name, source in sources:
            temporal = args.temporal_bundle if name == "after" else args.baseline_temporal_bundle or args.temporal_bundle
            results[name] = measure(source, args, len(rows), nab_rows, live_rows, header, Path(scratch), temporal)
            results[name]["temporal"]["bundle"] = str(temporal)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, _ in sources:
        print("\n".join(report(f"{name} ({ROOT if name == 'after' else args.baseline})", results[name])))
    if "before" in results:
        a, b = results["after"], results["before"]
        print("after / before: " + ", ".join(
            f"{kind} rows/s x{a[kind]['rows_per_s'] / b[kind]['rows_per_s']:.2f} wall, "
            f"x{a[kind]['rows_per_cpu_s'] / b[kind]['rows_per_cpu_s']:.2f} CPU" for kind in ("dense", "temporal"))
              + f"; 1M-row peak RSS {a['million']['peak_rss_mb']:.0f} vs {b['million']['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()

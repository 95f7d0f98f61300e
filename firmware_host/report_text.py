"""Plain-text tables for manifests, bench results and verify reports (the CLI prints them)."""

from __future__ import annotations

from .manifest import Manifest

METRIC_ROWS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


NEEDS_ATTACKS = ("balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _cell(model: dict, key: str) -> str:
    """A metric as the table shows it: n/a where the rows hold no attack to find (label-free data)."""
    value = model[key]
    if key in NEEDS_ATTACKS and (model.get("attack_rows") == 0 or value != value):
        return "n/a"
    return _fmt(value)


def metrics_table(models: dict) -> list[str]:
    """Rows: metric; columns: one per model (e.g. keras / float / int8)."""
    names = list(models)
    lines = [f"{'metric':<18}" + "".join(f"{n:>10}" for n in names)]
    for key in METRIC_ROWS + ("threshold",):
        if all(key in models[n] for n in names):
            lines.append(f"{key:<18}" + "".join(f"{_cell(models[n], key):>10}" for n in names))
    for n in names:
        if "confusion_matrix" in models[n]:
            (tn, fp), (fn, tp) = models[n]["confusion_matrix"]
            lines.append(f"confusion {n:<8} TN {tn}  FP {fp}  FN {fn}  TP {tp}")
    return lines


def _nab(windows: dict) -> str:
    """NAB's standard score of a model's test verdicts, where the build recorded it."""
    nab = (windows.get("nab") or {}).get("standard")
    return "" if nab is None or nab["score"] != nab["score"] else f"; NAB standard {nab['score']:.1f}"


def manifest_lines(m: Manifest, interpreter_here: str) -> list[str]:
    q_in, q_out = m.input_quantization, m.output_quantization
    lines = [f"bundle      {m.name} (schema {m.schema_version}, built {m.created})",
             f"detector    {m.detector}; classes {', '.join(m.classes)} (normal: {m.normal_class})",
             f"features    {len(m.features)}: {', '.join(m.features)}",
             f"input       shape {m.input_shape}, int8 scale {q_in.scale:.6g} zero_point {q_in.zero_point}",
             f"output      shape {m.output_shape}, int8 scale {q_out.scale:.6g} zero_point {q_out.zero_point}",
             f"threshold   int8 {m.threshold:.6g}  (float {m.threshold_float:.6g})",
             *([f"window      {m.window} samples per input; the first {m.window - 1} rows of a stream warm up"
                + ("; LSTM converted unrolled: run scores a block of windows per invoke"
                   if (m.recipe.get("quantize") or {}).get("unroll_lstm") else "")]
               if m.window > 1 else []),
             *([f"score       A = {m.score_params['a']:g}*RE' + {m.score_params['b']:g}*PE' (fitted on validation)"]
               if "a" in m.score_params else []),
             *([f"mode        {m.score_params['mode']}"] if "mode" in m.score_params else []),
             f"size        int8 {m.size_bytes.get('int8')} B, float {m.size_bytes.get('float')} B; weights int8 "
             f"{m.weight_bytes.get('int8')} B, float {m.weight_bytes.get('float')} B",
             f"sha256      {m.sha256}",
             f"kernels     {m.kernels} (golden vectors and metrics were computed with these)",
             f"split       {m.split.get('method')} (seed {m.split.get('seed')}), test rows "
             f"{m.split.get('test', {}).get('rows')}",
             "built with  " + ", ".join(f"{k} {v}" for k, v in m.versions.items()),
             f"runs here   {interpreter_here}",
             "test metrics:"]
    models = {k: m.metrics[k] for k in ("keras", "float", "int8") if k in m.metrics}
    lines += ["  " + line for line in metrics_table(models)]
    agree = m.metrics.get("int8_vs_float")
    if agree:
        lines.append(f"  int8 vs float: verdict agreement {agree['verdict_agreement']:.4f}, "
                     f"score rank correlation {agree['score_rank_correlation']:.4f}")
    teacher = m.metrics.get("teacher")
    if teacher:      # a distilled bundle: the XGBoost teacher it learned from, on the same test rows
        lines.append(f"  {teacher_line(teacher)}")
    for name in ("float", "int8"):
        w = m.metrics.get(name, {}).get("windows")
        if w:
            delay = f", mean delay {w['mean_delay_rows']:.0f} rows" if w["detected"] else ""
            lines.append(f"  labelled windows, {name}: {w['detected']}/{w['windows_scored']} detected, "
                         f"{w['false_alarms_per_1000']:.2f} false alarms per 1000 points{delay}{_nab(w)}")
    return lines


def teacher_line(t: dict) -> str:
    """One line on a distilled model's teacher: its test F1 and how often int8 agrees with it."""
    return (f"distilled from {t['teacher']}: teacher F1 {t['f1']:.4f}; int8 verdicts agree with the teacher's "
            f"on {100 * t['int8_agreement']:.2f} % of {t['rows']} test rows (float {100 * t['float_agreement']:.2f} %)")


def bench_lines(r: dict) -> list[str]:
    lines = [f"bench {r['name']} ({r['detector']}) on {r['interpreter']}, {r['invokes']} invokes per model",
             f"{'model':<7}{'bytes':>9}{'p50 us':>10}{'p99 us':>10}{'rows/s':>11}{'batched rows/s':>16}{'RSS +KB':>10}"]
    for name in ("float", "int8"):
        m = r[name]
        batched = f"{m['batched_rows_per_second']:.0f} (x{m['batch_rows']})" if m["batched_rows_per_second"] else "n/a"
        lines.append(f"{name:<7}{m['file_bytes']:>9}{m['invoke_us_p50']:>10.1f}{m['invoke_us_p99']:>10.1f}"
                     f"{m['rows_per_second']:>11.0f}{batched:>16}{m['rss_growth_bytes'] // 1024:>10}")
    lines.append(f"int8/float: file size {r['size_ratio_int8_to_float']:.3f}, weight bytes "
                 f"{r['weight_ratio_int8_to_float']:.3f}, p50 latency {r['latency_ratio_int8_to_float']:.3f}"
                 + (f", batched throughput {r['batched_throughput_ratio_int8_to_float']:.2f}"
                    if r["batched_throughput_ratio_int8_to_float"] else ""))
    if "run" in r:
        run = r["run"]
        cpu = f" ({run['rows_per_cpu_second']:,.0f} per CPU second)" if run.get("rows_per_cpu_second") else ""
        over = (f"{run['rows']:,} synthetic rows" if run.get("source", "synthetic") == "synthetic"
                else f"the {run['rows']:,} rows of {run['source']}")
        lines.append(f"tinyad run pipeline (read, parse, scale, invoke, score, format): "
                     f"{run['rows_per_second']:,.0f} rows/s{cpu} over {over}, start-up excluded")
    lines.append(f"peak RSS of this process: {r['peak_rss_bytes'] / 2**20:.1f} MiB")
    t = r["self_test"]
    lines.append(f"golden self-test: {'passed' if t['passed'] else 'FAILED'} ({t['rows']} rows, max "
                 f"{t['max_abs_diff_lsb']} LSB off, {t['verdict_mismatches']} verdicts differ)")
    return lines


def stream_lines(summary: dict, manifest, port: str, baud: int) -> list[str]:
    """The end-of-stream summary of ``tinyad stream``."""
    features = len(manifest.features)
    limit = baud / 10 / features
    rate = summary["samples_per_second"]
    return [
        f"{summary['samples']} samples, {summary['anomalies']} anomalies in {summary['seconds']:.1f} s "
        f"({rate:,.0f} samples/s; {baud} baud carries at most {limit:,.0f} of {features} bytes)",
        f"link: efficiency {summary['link_efficiency']:.3f} (sample bytes / bytes sent), "
        f"{summary['retransmissions']} frames re-sent, {summary['crc_errors']} CRC errors, "
        f"{summary['resyncs']} re-syncs ({summary['replayed']} warm-up samples replayed), "
        f"{summary['reconnects']} reconnects",
        f"round trip per frame: p50 {summary['rtt_ms_p50']:.1f} ms, p99 {summary['rtt_ms_p99']:.1f} ms",
    ]

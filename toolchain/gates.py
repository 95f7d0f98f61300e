"""Build gates: what an int8 model must keep of its float twin before it may ship.

Every gate reads verdicts the scoring code produced (``firmware_host.scoring.Verdicts``, one
per scored held-out row, for the float and the int8 TFLite model) and the verify report's
metrics; none recomputes a score or a verdict, so a change in how the run side decides (an
adaptive threshold, a [0, 1] score) reaches the gates unchanged. The gates:

- ``f1``: int8 F1 at most ``max_f1_drop`` below float F1 (``[verify] gate = "f1"``);
- ``windows``: int8 detects at least as many labelled anomaly windows as float
  (``gate = "windows"``; skipped, and said so, when the held-out rows hold no labelled window);
- ``false_alarms``: with the windows gate, int8 false alarms per 1,000 scored rows at most
  float's * (1 + ``false_alarm_tolerance``) + ``false_alarm_slack``; with no labelled window
  every alarm counts as false;
- ``unit_score``: where the verdicts carry the [0, 1] score, its mean absolute int8 - float
  gap at most ``max_unit_score_gap``;
- ``agreement``: int8 and float verdicts agree on at least ``min_agreement`` of the rows
  (every bundle, and every extra split a build reports).
"""

from __future__ import annotations

import numpy as np

from firmware_host.scoring import Verdicts

from .recipe import VerifySpec

ORDER = ("f1", "windows", "false_alarms", "unit_score", "agreement")


def _gate(name: str, passed: bool, shortfall: float, text: str, **figures) -> dict:
    """One gate's outcome; ``shortfall`` (0 when passed) ranks failed attempts against each other."""
    return {"gate": name, "passed": bool(passed), "shortfall": 0.0 if passed else float(shortfall),
            "text": text, **figures}


def f1_gate(models: dict, spec: VerifySpec) -> dict:
    if models["float"].get("attack_rows") == 0:
        return _gate("f1", True, 0.0, "skipped: the held-out rows hold no attack row (label-free data), so F1 "
                                      "is not defined", skipped=True)
    f, q = models["float"]["f1"], models["int8"]["f1"]
    drop = f - q
    return _gate("f1", drop <= spec.max_f1_drop + 1e-12, drop - spec.max_f1_drop,
                 f"int8 F1 {q:.4f} is {100 * drop:.2f} pt below float F1 {f:.4f} "
                 f"(allowed: {100 * spec.max_f1_drop:.2f} pt)",
                 float_f1=f, int8_f1=q, f1_drop=drop, max_f1_drop=spec.max_f1_drop)


def windows_gate(models: dict) -> dict:
    w = {name: models[name].get("windows") for name in ("float", "int8")}
    if not w["float"] or not w["float"].get("windows_scored"):
        return _gate("windows", True, 0.0, "skipped: the held-out rows hold no labelled anomaly window",
                     skipped=True)
    f, q = w["float"]["detected"], w["int8"]["detected"]
    return _gate("windows", q >= f, f - q, f"int8 detects {q} labelled windows, float {f}",
                 float_detected=f, int8_detected=q, windows=w["float"]["windows_scored"])


def alarms_per_1000(model: dict, verdicts: Verdicts) -> float:
    """False alarms per 1,000 scored rows: the window scorer's count where windows are labelled,
    else every alarm (a series with no labelled anomaly has no true one to find)."""
    w = model.get("windows")
    if w:
        return float(w["false_alarms_per_1000"])
    flags = np.asarray(verdicts.is_anomaly, bool)
    return 1000.0 * float(flags.mean()) if flags.size else 0.0


def false_alarm_gate(models: dict, verdicts: dict, spec: VerifySpec) -> dict:
    f, q = (alarms_per_1000(models[name], verdicts[name]) for name in ("float", "int8"))
    limit = f * (1.0 + spec.false_alarm_tolerance) + spec.false_alarm_slack
    return _gate("false_alarms", q <= limit + 1e-9, (q - limit) / max(limit, 1.0),
                 f"int8 raises {q:.2f} false alarms per 1,000 rows, float {f:.2f} "
                 f"(allowed: {limit:.2f} = float * {1 + spec.false_alarm_tolerance:g} + {spec.false_alarm_slack:g})",
                 float_per_1000=f, int8_per_1000=q, limit_per_1000=limit,
                 tolerance=spec.false_alarm_tolerance, slack_per_1000=spec.false_alarm_slack)


def unit_score_gate(verdicts: dict, spec: VerifySpec) -> dict | None:
    """None when the verdicts carry no [0, 1] score."""
    f, q = verdicts["float"].unit_score, verdicts["int8"].unit_score
    if f is None or q is None:
        return None
    f, q = np.asarray(f, np.float64), np.asarray(q, np.float64)
    both = np.isfinite(f) & np.isfinite(q)
    gap = np.abs(f[both] - q[both])
    mean_gap = float(gap.mean()) if gap.size else 0.0
    return _gate("unit_score", mean_gap <= spec.max_unit_score_gap + 1e-12, mean_gap - spec.max_unit_score_gap,
                 f"the [0, 1] score differs by {mean_gap:.4f} on average between int8 and float "
                 f"(allowed: {spec.max_unit_score_gap:g})",
                 mean_gap=mean_gap, p99_gap=float(np.percentile(gap, 99)) if gap.size else 0.0,
                 max_unit_score_gap=spec.max_unit_score_gap)


def agreement_gate(verdicts: dict, spec: VerifySpec) -> dict:
    f, q = (np.asarray(verdicts[name].is_anomaly, bool) for name in ("float", "int8"))
    agreement = float(np.mean(f == q)) if f.size else 1.0
    return _gate("agreement", agreement >= spec.min_agreement - 1e-12, spec.min_agreement - agreement,
                 f"int8 and float verdicts agree on {100 * agreement:.2f} % of {f.size} rows "
                 f"(required: {100 * spec.min_agreement:.2f} %)",
                 agreement=agreement, rows=int(f.size), disagreements=int(np.sum(f != q)),
                 min_agreement=spec.min_agreement)


def evaluate(models: dict, verdicts: dict, spec: VerifySpec, primary: bool = True) -> list[dict]:
    """Every gate that applies, in ``ORDER``. ``models``: the verify report's per-model metrics;
    ``verdicts``: {"float": Verdicts, "int8": Verdicts} on the same rows. An extra split a build
    only reports (``primary=False``) is held to the agreement gate alone."""
    found = []
    if primary and spec.gate == "windows":
        found += [windows_gate(models), false_alarm_gate(models, verdicts, spec)]
    elif primary:
        found.append(f1_gate(models, spec))
        if found[-1].get("skipped"):       # no attack row to count: int8 must not raise more alarms instead
            found.append(false_alarm_gate(models, verdicts, spec))
    if primary:
        unit = unit_score_gate(verdicts, spec)
        found += [unit] if unit else []
    found.append(agreement_gate(verdicts, spec))
    return found


def failed(gates: list[dict]) -> list[dict]:
    return [g for g in gates if not g["passed"]]


def badness(gates: list[dict]) -> tuple[int, float]:
    """Sort key of an attempt: fewer failed gates first, then the smaller summed shortfall."""
    bad = failed(gates)
    return len(bad), sum(g["shortfall"] for g in bad)

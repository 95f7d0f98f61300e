"""Quantization remedies: when an int8 model fails a gate, reconvert it in a fixed order until one passes.

Each attempt reconverts the trained model (no retraining) with one setting of the recipe's
``[quantize]`` changed, verifies it on the held-out rows and applies every gate
(``toolchain/gates.py``); no gate is ever loosened. The order:

0. ``recipe``: the recipe's own settings;
1. ``more_calibration``: 4x the representative rows (at least 2,000), up to every training
   row or window (skipped when the recipe already takes them all);
2. ``synthetic_share``: 0.1 of the representative rows moved to the scaler's clip range when
   the recipe has none, none when it has some (min/max calibration only sees whether such rows
   exist, so the share's size matters little: the switch is what changes the ranges);
3. ``per_tensor``: Dense weights quantized per tensor instead of per channel (skipped when the
   int8 model holds no per-channel tensor);
4. ``matched_threshold``: the recipe's conversion, with the int8 threshold chosen on the
   validation rows to agree best with the float model's validation verdicts instead of by the
   recipe's rule (no label is read; skipped where an adaptive rule, not a threshold, decides);
5. ``int16_activations``: int16 activations with int8 weights. Probed with a real conversion
   and always skipped today: TF 2.21's converter gives such a model int16 input and output
   tensors (it refuses int8 ones) and refuses the fused LSTM; the run side serves int8 I/O only.

The first attempt that passes every gate is kept; the report lists every attempt with its
gate figures, and the manifest's ``calibration`` names the remedy used. When none passes,
``Outcome.raise_if_failed`` raises one ``QuantizationError`` line naming the failing gates and
the best attempt's figures.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_host.errors import QuantizationError

from . import convert, gates
from .prepare import Prepared
from .quantize import Quantized, quantize, representative_rows
from .recipe import QuantizeSpec, Recipe
from .train import TrainResult, model_inputs, part_truth
from .verify import verify

ORDER = ("recipe", "more_calibration", "synthetic_share", "per_tensor", "matched_threshold", "int16_activations")
MORE_ROWS_FACTOR, MORE_ROWS_AT_LEAST = 4, 2000
SYNTHETIC_SHARE = 0.1
RUN_SIDE_IO = ("the run side serves int8 input and output tensors only (runner.Detector, and one byte per "
               "feature on the serial link)")


@dataclass
class Outcome:
    """The kept attempt (the first that passed, else the best) and the record of every attempt."""

    quantized: Quantized
    report: dict                     # verify report of the kept attempt (gates included)
    scores: dict                     # its test scores (the report's plots)
    settings: QuantizeSpec
    attempts: list = field(default_factory=list)
    chosen: str | None = None        # the remedy that passed ("recipe": none was needed); None: all failed
    where: str = ""                  # "" for the bundle's split, else e.g. "on the 'time' split"
    int8_threshold: str = "recipe"   # verify's int8 threshold rule ("match_float": matched_threshold)

    def summary(self) -> dict:
        """The report's record: the fixed order, every attempt, and which one passed."""
        return {"order": list(ORDER), "chosen": self.chosen, "attempts": self.attempts}

    def calibration(self) -> dict:
        """What the manifest's ``calibration`` states about how the int8 ranges were made."""
        return {"quantization_remedy": self.chosen, "calibrate_on": self.settings.calibrate_on,
                "representative_rows": self.settings.representative_rows,
                "synthetic_share": self.settings.synthetic_share, "per_channel_dense": self.settings.per_channel,
                "int8_threshold": self.int8_threshold, "attempts": len(self.attempts)}

    def raise_if_failed(self) -> None:
        if self.chosen is not None:
            return
        bad = gates.failed(self.report["gates"])
        tried = [a["remedy"] for a in self.attempts if a["status"] != "skipped"]
        skipped = [a["remedy"] for a in self.attempts if a["status"] == "skipped"]
        kept = next(a["remedy"] for a in self.attempts if a.get("kept"))
        raise QuantizationError(
            f"verify gate failed{' ' + self.where if self.where else ''} ({', '.join(g['gate'] for g in bad)}) "
            f"after {len(tried)} quantization attempts ({', '.join(tried)}"
            f"{'; skipped: ' + ', '.join(skipped) if skipped else ''}); best attempt '{kept}': "
            + "; ".join(g["text"] for g in bad))


def plan(spec: QuantizeSpec, pool: int, per_channel_names: list[str], adaptive: bool = False
         ) -> list[tuple[str, str, object, str]]:
    """(remedy, description, settings or skip reason, int8 threshold rule) in ``ORDER`` after the
    recipe's attempt. ``pool``: training rows/windows calibration may draw from;
    ``per_channel_names``: the recipe attempt's per-channel tensors; ``adaptive``: verdicts come
    from the adaptive rule."""
    steps = []
    more = min(max(MORE_ROWS_FACTOR * spec.representative_rows, MORE_ROWS_AT_LEAST), pool)
    steps.append(("more_calibration", f"{more} representative rows instead of {spec.representative_rows}",
                  dataclasses.replace(spec, representative_rows=more) if more > spec.representative_rows else
                  f"the recipe already calibrates on all {pool} training rows", "recipe"))
    share = 0.0 if spec.synthetic_share > 0 else SYNTHETIC_SHARE
    steps.append(("synthetic_share", f"synthetic share {share:g} instead of {spec.synthetic_share:g}",
                  dataclasses.replace(spec, synthetic_share=share), "recipe"))
    steps.append(("per_tensor", "Dense weights per tensor instead of per channel",
                  dataclasses.replace(spec, per_channel=False) if spec.per_channel and per_channel_names else
                  "the int8 model holds no per-channel tensor", "recipe"))
    steps.append(("matched_threshold", "int8 threshold matched to float's validation verdicts",
                  "the adaptive rule decides, not a threshold" if adaptive else spec, "match_float"))
    steps.append(("int16_activations", "int16 activations, int8 weights", None, "recipe"))   # see _int16_probe
    return steps


def _int16_probe(model, representative: np.ndarray) -> str:
    """Why the int16 remedy cannot serve this model: a real 16x8 conversion says which half refuses."""
    try:
        convert.convert(model, int8=True, representative=representative, int16_activations=True)
    except QuantizationError as exc:
        return f"the converter refuses it ({exc})"
    return f"it converts with int16 input and output tensors, but {RUN_SIDE_IO}"


def _attempt(prep: Prepared, trained: TrainResult, recipe: Recipe, spec: QuantizeSpec, calibration_pool,
             float_model: bytes | None, primary: bool, int8_threshold: str = "recipe"):
    """Convert with ``spec``, verify, apply the gates: (Quantized, verify report, test scores)."""
    x_train, attack = calibration_pool
    rep, origin = representative_rows(x_train, attack, spec, recipe.seed, trained.scaler.clip)
    q = quantize(trained.model, rep, origin, spec, float_model)
    with tempfile.TemporaryDirectory() as tmp:
        float_path, int8_path = Path(tmp) / "float.tflite", Path(tmp) / "int8.tflite"
        float_path.write_bytes(q.float_model)
        int8_path.write_bytes(q.int8_model)
        report, scores = verify(prep, trained, float_path, int8_path, recipe, primary, int8_threshold)
    return q, report, scores


def _record(number: int, remedy: str, description: str, spec: QuantizeSpec | None, rule: str = "recipe",
            **extra) -> dict:
    settings = None if spec is None else {"representative_rows": spec.representative_rows,
                                          "synthetic_share": spec.synthetic_share, "per_channel": spec.per_channel,
                                          "int8_threshold": rule}
    return {"attempt": number, "remedy": remedy, "description": description, "settings": settings, **extra}


def calibration_pool(prep: Prepared, trained: TrainResult, spec: QuantizeSpec) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, is_attack) calibration may sample from: the training part's, and with
    ``calibrate_on = "train_validation"`` the validation part's after them, so that a time split's
    int8 ranges also cover the later traffic validation holds."""
    parts = ("train", "validation") if spec.calibrate_on == "train_validation" else ("train",)
    found = [model_inputs(prep, trained, part) for part in parts]
    rows = np.concatenate([x for x, _ in found])
    attack = np.concatenate([part_truth(prep, part, pos)[0] for part, (_, pos) in zip(parts, found)])
    return rows, attack


def quantize_verified(prep: Prepared, trained: TrainResult, recipe: Recipe, progress=None, primary: bool = True,
                      where: str = "") -> Outcome:
    """The recipe's conversion, then the remedies in ``ORDER`` while a gate fails
    (``[verify] remedies = false``: the recipe's attempt only). ``primary=False`` (an extra split
    the build only reports) holds attempts to the agreement gate. The op-list gate of the
    recipe's own attempt raises at once: no remedy turns a float op into an int8 one."""
    pool = calibration_pool(prep, trained, recipe.quantize)
    x_train = pool[0]
    say = (lambda text: progress("remedy", 0, 0, {"message": f"{where + ': ' if where else ''}{text}"})) \
        if progress else (lambda text: None)
    q, report, scores = _attempt(prep, trained, recipe, recipe.quantize, pool, None, primary)
    attempts = [_record(0, "recipe", "the recipe's [quantize] settings", recipe.quantize,
                        status="passed" if report["passed"] else "failed", gates=report["gates"])]
    kept = Outcome(q, report, scores, recipe.quantize, attempts, "recipe" if report["passed"] else None, where)
    if report["passed"] or not recipe.verify.remedies:
        attempts[0]["kept"] = True
        return kept
    say(f"int8 fails {', '.join(g['gate'] for g in gates.failed(report['gates']))}; trying quantization remedies")
    steps = plan(recipe.quantize, len(x_train), convert.per_channel_tensors(q.int8_model), recipe.adaptive.enabled)
    for number, (remedy, description, spec, rule) in enumerate(steps, start=1):
        prefix = f"remedy {number}/{len(steps)} {remedy} ({description})"
        if not isinstance(spec, QuantizeSpec):
            reason = spec if spec is not None else _int16_probe(trained.model, q.representative)
            attempts.append(_record(number, remedy, description, None, status="skipped", reason=reason))
            say(f"{prefix}: skipped, {reason}")
            continue
        try:
            q2, report2, scores2 = _attempt(prep, trained, recipe, spec, pool, q.float_model, primary, rule)
        except QuantizationError as exc:
            attempts.append(_record(number, remedy, description, spec, rule, status="error", reason=str(exc)))
            say(f"{prefix}: {exc}")
            continue
        attempts.append(_record(number, remedy, description, spec, rule, status="passed" if report2["passed"] else
                                "failed", gates=report2["gates"]))
        say(f"{prefix}: " + ("passed" if report2["passed"] else
                             "; ".join(g["text"] for g in gates.failed(report2["gates"]))))
        if report2["passed"]:
            attempts[-1]["kept"] = True
            return Outcome(q2, report2, scores2, spec, attempts, remedy, where, rule)
        if gates.badness(report2["gates"]) < gates.badness(kept.report["gates"]):
            kept = Outcome(q2, report2, scores2, spec, attempts, None, where, rule)
    kept_number = next(a["attempt"] for a in attempts if a.get("gates") is kept.report["gates"])
    attempts[kept_number]["kept"] = True
    return kept

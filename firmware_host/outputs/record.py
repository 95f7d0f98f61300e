"""One verdict as a JSON object, the record every verdict output shares (JSON lines, MQTT).

A record holds, in this order:

- ``row``: the input row number (0 = the first row after the header), as in the CSV;
- ``time``: the row's time cell, as text, when the input has a time column (see
  ``csv_input.time_column``), and absent otherwise;
- ``status``: ``scored``, or ``warming_up`` for a temporal bundle's first window-1 rows;
- ``score``: the detector's raw score in its own units, the CSV's 6 significant digits of its
  float32 value (null while warming up);
- ``unit_score``: the adaptive anomaly level in [0, 1], null for a bundle without adaptive scoring
  and while warming up;
- ``is_anomaly``: the verdict, true or false;
- ``class``: the predicted class name (null while warming up);
- ``model_sha256``: the hash of the int8 model that gave the verdict;
- ``why``: only when the verdicts carry an explanation (``Verdicts.why``): the features that
  made the row stand out, most important first, as ``[name, value]`` pairs.

``jsonl_text`` builds a block's lines a column at a time (a few string operations per row), so a
bulk file's JSON lines cost about what its CSV costs; ``records`` gives the same objects as dicts.
``block_message`` puts a block's records in one JSON object for MQTT, the hash once:
``{"model_sha256": ..., "verdicts": [record without model_sha256, ...]}``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .. import csv_input
from ..csv_input import score_text, unit_text

NOT_FINITE = {"nan", "inf", "-inf"}     # score_text of what JSON has no number for


def jsonl_text(first_row: int, verdicts, manifest, times: list[str] | None = None) -> str:
    """The JSON lines (each ending in ``\\n``) of one block of verdicts, rows ``first_row`` on.
    ``times`` holds each row's time cell, or is None where the input has no time column."""
    texts = _record_texts(first_row, verdicts, manifest, times, f',"model_sha256":"{manifest.sha256}"')
    return "\n".join(texts) + "\n" if texts else ""


def block_message(first_row: int, verdicts, manifest, times: list[str] | None = None) -> str:
    """One block of verdicts as one JSON object (an MQTT message): ``{"model_sha256": ...,
    "verdicts": [record, ...]}``, each record as in ``jsonl_text`` but without ``model_sha256``,
    which the block carries once for all its rows (it was ~80 of a record's ~190 bytes)."""
    texts = _record_texts(first_row, verdicts, manifest, times, "")
    return f'{{"model_sha256":"{manifest.sha256}","verdicts":[{",".join(texts)}]}}'


def _record_texts(first_row: int, verdicts, manifest, times: list[str] | None, tail: str) -> list[str]:
    """Each row's record as JSON text, ``tail`` (fields, each with its leading comma) after
    ``class``, built a column at a time: a few string operations per row."""
    count = len(verdicts.scores)
    if count == 0:
        return []
    score_cells = csv_input.score_cells(verdicts)
    if any(text in score_cells for text in NOT_FINITE):    # inf and NaN are not JSON numbers
        score_cells = ["null" if cell in NOT_FINITE else cell for cell in score_cells]
    units = csv_input.unit_cells(verdicts)
    # The rest of a scored row depends only on its verdict and class: one text per pair.
    classes = len(manifest.classes)
    endings = [f',"is_anomaly":{flag},"class":{json.dumps(name)}{tail}'
               for flag in ("false", "true") for name in manifest.classes]
    ends = list(map(endings.__getitem__, (np.asarray(verdicts.is_anomaly, dtype=bool).astype(np.int64) * classes
                                          + np.asarray(verdicts.predicted, dtype=np.int64)).tolist()))
    rows = range(first_row, first_row + count)
    why = getattr(verdicts, "why", None)
    time_cells = [""] * count if times is None else [f',"time":{cell}' for cell in map(json.dumps, times)]
    why_cells = [""] * count if why is None else [f',"why":{_why_json(entry)}' for entry in why]
    if times is None and why is None and units is None:     # the common cases, in the fewest string operations
        texts = [f'{{"row":{row},"status":"scored","score":{score},"unit_score":null{end}}}'
                 for row, score, end in zip(rows, score_cells, ends)]
    elif times is None and why is None:
        texts = [f'{{"row":{row},"status":"scored","score":{score},"unit_score":{unit}{end}}}'
                 for row, score, unit, end in zip(rows, score_cells, units, ends)]
    else:
        unit_cells = ["null"] * count if units is None else units
        texts = [f'{{"row":{row}{stamp},"status":"scored","score":{score},"unit_score":{unit}{end}{because}}}'
                 for row, stamp, score, unit, end, because in
                 zip(rows, time_cells, score_cells, unit_cells, ends, why_cells)]
    if verdicts.warming_up is not None and verdicts.warming_up.any():
        for i in np.flatnonzero(verdicts.warming_up).tolist():
            texts[i] = (f'{{"row":{first_row + i}{time_cells[i]},"status":"warming_up","score":null,'
                        f'"unit_score":null,"is_anomaly":false,"class":null{tail}{why_cells[i]}}}')
    return texts


def records(first_row: int, verdicts, manifest, times: list[str] | None = None) -> list[dict]:
    """The records of one block of verdicts as dicts (what ``json.loads`` gives for each line of
    ``jsonl_text``), built one row at a time: for a reader, and to check the bulk text against."""
    warming = verdicts.warming_up if verdicts.warming_up is not None else np.zeros(len(verdicts.scores), bool)
    why = getattr(verdicts, "why", None)
    out = []
    for i, score in enumerate(np.asarray(verdicts.scores, dtype=np.float64).tolist()):
        record: dict = {"row": first_row + i}
        if times is not None:
            record["time"] = times[i]
        scored = not warming[i]
        value = float(score_text(score)) if scored else math.nan
        record.update({
            "status": "scored" if scored else "warming_up",
            "score": value if math.isfinite(value) else None,
            "unit_score": float(unit_text(verdicts.unit_score[i])) if scored and verdicts.unit_score is not None
            else None,
            "is_anomaly": bool(verdicts.is_anomaly[i]) and scored,
            "class": manifest.classes[int(verdicts.predicted[i])] if scored else None,
            "model_sha256": manifest.sha256,
        })
        if why is not None:
            record["why"] = json.loads(_why_json(why[i]))
        out.append(record)
    return out


def _why_json(entry) -> str:
    """One row's explanation (a list of [feature name, value] pairs, or None) as JSON; numpy
    numbers become plain JSON numbers, a value that is not finite (a missing cell) null."""
    if entry is None:
        return "null"
    pairs = [[str(name), _number(value)] for name, value in entry]
    return json.dumps(pairs, separators=(",", ":"), allow_nan=False)


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None

"""--jsonl: one JSON object per verdict, the same verdicts as the CSV (real bundle, real interpreter)."""

from __future__ import annotations

import csv
import gzip
import io
import json

import numpy as np
from click.testing import CliRunner

from conftest import SLICE
from firmware_host.cli import main
from firmware_host.manifest import load_manifest
from firmware_host.csv_input import score_text, verdict_text
from firmware_host.outputs import block_message, jsonl_text, records
from firmware_host.scoring import Verdicts


def _csv_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _jsonl(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def _number(cell: str):
    return None if cell == "" else float(cell)


def assert_same_verdicts(csv_rows: list[dict], objects: list[dict], sha256: str) -> None:
    assert len(objects) == len(csv_rows)
    for row, obj in zip(csv_rows, objects):
        assert obj["row"] == int(row["row"])
        assert obj["status"] == row["status"]
        assert obj["score"] == _number(row["score"])
        assert obj["unit_score"] == _number(row["unit_score"])
        assert obj["is_anomaly"] is (row["is_anomaly"] == "1")
        assert obj["class"] == (row["class"] or None)
        assert obj["model_sha256"] == sha256


def test_jsonl_verdicts_equal_the_csv(built_bundle, tmp_path):
    verdicts_csv, verdicts_jsonl = tmp_path / "v.csv", tmp_path / "v.jsonl"
    result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", str(SLICE), "--output",
                                       str(verdicts_csv), "--jsonl", str(verdicts_jsonl), "--explain", "2"])
    assert result.exit_code == 0, result.output
    rows, objects = _csv_rows(verdicts_csv), _jsonl(verdicts_jsonl)
    assert len(rows) == 6000
    assert_same_verdicts(rows, objects, load_manifest(built_bundle).sha256)
    assert any(obj["is_anomaly"] for obj in objects) and not all(obj["is_anomaly"] for obj in objects)
    assert all("time" not in obj for obj in objects)          # the SDN file has no time column
    for row, obj in zip(rows, objects):                       # --explain: the CSV's why, as pairs
        assert ";".join(f"{name}:{value:.3f}" for name, value in obj["why"]) == row["why"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_jsonl_to_stdout_replaces_the_csv(built_bundle, tmp_path):
    result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", str(SLICE), "--jsonl", "-"])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [obj["row"] for obj in objects] == list(range(6000))


def _with_time_column(tmp_path, quote_every: int = 0):
    """The slice with a ``timestamp`` column in front; every ``quote_every``-th cell quoted (a quote
    sends its block to the row-by-row reader)."""
    with gzip.open(SLICE, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp"] + rows[0])
    stamps = []
    for i, row in enumerate(rows[1:]):
        stamps.append(f"2026-11-27 10:{i // 60 % 60:02d}:{i % 60:02d}.{i}")
        writer.writerow([stamps[-1]] + row)
    text = out.getvalue()
    if quote_every:
        lines = text.split("\n")
        lines[1::quote_every] = [f'"{line.split(",", 1)[0]}",{line.split(",", 1)[1]}' for line in lines[1::quote_every]]
        text = "\n".join(lines)
    path = tmp_path / f"timed{quote_every}.csv"
    path.write_text(text)
    return path, stamps


def test_jsonl_carries_the_time_column(built_bundle, tmp_path):
    for quote_every in (0, 700):           # whole-column parsing, and blocks re-read row by row
        path, stamps = _with_time_column(tmp_path, quote_every)
        out = tmp_path / f"t{quote_every}.jsonl"
        plain = tmp_path / f"t{quote_every}.csv"
        result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", str(path), "--jsonl", str(out),
                                           "--output", str(plain), "--batch-rows", "97"])
        assert result.exit_code == 0, result.output
        objects = _jsonl(out)
        assert [obj["time"] for obj in objects] == stamps
        assert_same_verdicts(_csv_rows(plain), objects, load_manifest(built_bundle).sha256)


def test_a_failed_run_leaves_no_jsonl_file(built_bundle, tmp_path):
    bad = tmp_path / "bad.csv"
    with gzip.open(SLICE, "rt", newline="") as handle:
        lines = handle.read().splitlines()
    header = lines[0].split(",")
    cells = lines[50].split(",")
    feature = next(name for name in load_manifest(built_bundle).features if name in header)
    cells[header.index(feature)] = "twelve"
    bad.write_text("\n".join(lines[:50] + [",".join(cells)] + lines[51:100]) + "\n")
    out = tmp_path / "v.jsonl"
    result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", str(bad), "--jsonl", str(out),
                                       "--output", str(tmp_path / "v.csv")])
    assert result.exit_code == 1 and "line 51" in result.output and feature in result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp-*"))


class _Manifest:
    classes = ["normal", "anomaly, \"bad\""]           # a class name JSON must escape
    sha256 = "ab" * 32


def test_bulk_text_equals_the_records_row_by_row():
    verdicts = Verdicts(scores=np.array([np.nan, 0.25, 1e-7, 3.5e38 * 10, 2.0]),
                        is_anomaly=np.array([False, False, True, True, True]),
                        predicted=np.array([0, 0, 1, 1, 1]),
                        warming_up=np.array([True, False, False, False, False]),
                        unit_score=np.array([0.0, 0.1, 0.5, 1.0, 65534 / 65535]),
                        why=[[], [], [["a", np.float64(0.5)], ["b", 0.25]], [["c", float("nan")]], []])
    times = ["t0", "t\"1", "t2", "t3", "2026-01-01T00:00:00Z"]
    text = jsonl_text(10, verdicts, _Manifest, times)
    parsed = [json.loads(line) for line in text.splitlines()]
    assert parsed == records(10, verdicts, _Manifest, times)
    assert parsed[0] == {"row": 10, "time": "t0", "status": "warming_up", "score": None, "unit_score": None,
                         "is_anomaly": False, "class": None, "model_sha256": "ab" * 32, "why": []}
    assert parsed[2]["why"] == [["a", 0.5], ["b", 0.25]] and parsed[2]["class"] == 'anomaly, "bad"'
    assert parsed[3]["score"] is None and parsed[3]["why"] == [["c", None]]    # inf and NaN are not JSON
    assert parsed[4]["unit_score"] == 0.999985
    # The MQTT block: the same records without the hash, which the block carries once.
    block = json.loads(block_message(10, verdicts, _Manifest, times))
    assert block == {"model_sha256": "ab" * 32,
                     "verdicts": [{k: v for k, v in r.items() if k != "model_sha256"} for r in parsed]}
    no_extras = Verdicts(scores=np.array([0.5]), is_anomaly=np.array([False]), predicted=np.array([0]))
    assert json.loads(jsonl_text(0, no_extras, _Manifest)) == {
        "row": 0, "status": "scored", "score": 0.5, "unit_score": None, "is_anomaly": False, "class": "normal",
        "model_sha256": "ab" * 32}


def test_an_int8_models_few_distinct_scores_give_the_same_records():
    """Scores with few distinct values (an int8 model's) are formatted once per value and shared
    with the CSV (``csv_input.score_cells``): the records still equal the row-by-row ones."""
    rng = np.random.default_rng(3)
    n = 300
    scores = rng.choice(np.arange(256) / 255, n)
    scores[[3, 9, 250]] = [np.nan, np.inf, np.inf]              # not JSON numbers: null
    verdicts = Verdicts(scores=scores, is_anomaly=rng.random(n) < 0.4, predicted=rng.integers(0, 2, n),
                        unit_score=rng.integers(0, 256, n) * 257 / 65535)
    csv_text = verdict_text(7, verdicts, _Manifest)             # fills verdicts.texts first, as `run` does
    assert verdicts.texts["score"] and verdicts.texts["unit"]
    parsed = [json.loads(line) for line in jsonl_text(7, verdicts, _Manifest).splitlines()]
    assert parsed == records(7, verdicts, _Manifest)
    assert [row.split(",")[2] for row in csv_text.splitlines()] == [score_text(score) for score in scores]


def test_a_temporal_bundle_warms_up_and_carries_the_time_cells(temporal_bundles, shared_data, tmp_path):
    """A real LSTM bundle (window 6) on TON_IoT weather rows, whose `time` column the records carry:
    the first 5 rows are warming_up records with null score and class, the rest equal the CSV."""
    _, bundle, _ = temporal_bundles["lstm"]
    rows = tmp_path / "weather.csv"
    with gzip.open(shared_data / "ton_iot" / "Train_Test_IoT_Weather.csv.gz", "rt", encoding="utf-8-sig") as handle:
        rows.write_text("".join(line for _, line in zip(range(301), handle)))
    with open(rows, newline="") as handle:
        stamps = [row["time"] for row in csv.DictReader(handle)]
    out, plain = tmp_path / "v.jsonl", tmp_path / "v.csv"
    result = CliRunner().invoke(main, ["run", str(bundle), "--input", str(rows), "--jsonl", str(out),
                                       "--output", str(plain)])
    assert result.exit_code == 0, result.output
    objects = _jsonl(out)
    assert [obj["time"] for obj in objects] == stamps and len(stamps) == 300
    assert [obj["status"] for obj in objects[:6]] == ["warming_up"] * 5 + ["scored"]
    assert objects[0]["score"] is None and objects[0]["class"] is None and objects[0]["is_anomaly"] is False
    assert_same_verdicts(_csv_rows(plain), objects, load_manifest(bundle).sha256)

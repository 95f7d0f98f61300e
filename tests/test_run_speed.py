"""`tinyad run` at line rate, without changing a byte: batched invokes give the batch-1 outputs,
block parsing gives the row-by-row values and errors, bulk formatting gives csv.writer's bytes,
and a live row gets its verdict while the input is still open. Speed itself is measured by
benchmarks/run_throughput.py, never asserted here."""

from __future__ import annotations

import csv
import gzip
import io
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.csv_input import FeatureReader, read_batches, verdict_rows, verdict_text
from firmware_host.errors import DataError
from firmware_host.interpreter import load_runtime
from firmware_host.line_blocks import record_blocks
from firmware_host.manifest import MODEL_FILE, Manifest, load_manifest
from firmware_host.runner import TFLiteModel, prepare_rows
from firmware_host.scoring import Verdicts
from test_input_rules import _manifest   # a manifest holding just what a CSV reader uses
from firmware_host.values import records

from conftest import SLICE

TINYAD = [sys.executable, "-m", "firmware_host.cli"]


def slice_text() -> str:
    with gzip.open(SLICE, "rt", newline="") as handle:
        return handle.read()


def row_by_row(text: str, manifest: Manifest, source: str) -> tuple[np.ndarray, str | None]:
    """The reference reader: csv + values, one row at a time (what read_batches did before blocks).
    Returns (values of the rows before the first error, that error's message or None)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    features = FeatureReader(next(reader), manifest, source)
    rows = []
    try:
        for line, cells in records(reader, features.header, source):
            rows.append(features.parse(cells, line))
    except DataError as error:
        return np.array(rows).reshape(-1, len(features.columns)), str(error)
    return np.array(rows).reshape(-1, len(features.columns)), None


def blocks_read(text: str, manifest: Manifest, source: str, batch_rows: int = 1000) -> tuple[np.ndarray, str | None]:
    got = []
    try:
        for batch in read_batches(io.StringIO(text, newline=""), manifest, source, batch_rows):
            got.append(batch)
    except DataError as error:
        return np.vstack(got) if got else np.empty((0, len(manifest.features))), str(error)
    return np.vstack(got), None


# -- batched invoke -----------------------------------------------------------------------------

def test_batched_invoke_gives_the_batch_one_outputs_row_by_row(built_bundle):
    manifest = load_manifest(built_bundle)
    raw, _ = row_by_row(slice_text(), manifest, "slice")
    rng = np.random.default_rng(1)
    inputs = np.vstack([prepare_rows(manifest, raw),                          # the real rows
                        rng.integers(-128, 128, size=(3000, len(manifest.features))).astype(np.int8)])
    model = TFLiteModel(built_bundle / MODEL_FILE, load_runtime())
    one = model.invoke_all(inputs, batched=False)
    batched = model.invoke_all(inputs)
    assert model._batched_rows > 1                 # the resized interpreter really ran
    assert len(inputs) > 1024                      # and more than one batch of it
    for i in range(len(inputs)):                   # raw int8 outputs, row by row
        assert np.array_equal(batched[i], one[i]), f"row {i}: {batched[i]} vs {one[i]}"
    assert np.array_equal(model.invoke_all(inputs[:7]), one[:7])   # a short block (another resize)


def test_run_verdicts_are_byte_identical_at_batch_1_and_batched(built_bundle, tmp_path):
    outputs = []
    for batch in (1, 4096):
        out = tmp_path / f"verdicts-{batch}.csv"
        result = CliRunner().invoke(main, ["run", str(built_bundle), "--input", str(SLICE), "--output", str(out),
                                           "--batch-rows", str(batch)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0].count(b"\r\n") == 6001
    assert outputs[0] == outputs[1]


# -- block parsing -------------------------------------------------------------------------------

SDN = _manifest(["pktcount", "bytecount", "dur", "Protocol_UDP", "Protocol_TCP"],
                {"Protocol_UDP": ["Protocol", "UDP"], "Protocol_TCP": ["Protocol", "TCP"]},
                {"Protocol": ["UDP", "TCP", "ICMP"]})


def big_text(copies: int = 12) -> tuple[list[str], list[str]]:
    """The shipped slice's header and rows, repeated: 72,000 rows, many parse blocks."""
    lines = slice_text().splitlines(keepends=True)
    return lines[:1], lines[1:] * copies


def test_blocks_read_the_values_the_row_by_row_reader_reads():
    header, rows = big_text(4)
    rows = list(rows)
    rows[5] = rows[5].replace(",UDP,", ", NA ,").replace(",TCP,", ", NA ,").replace(",ICMP,", ", NA ,")
    rows[9000] = "\n"                                              # a blank line
    rows[12000] = rows[12000].replace("\n", "\r\n")                 # CRLF
    rows[15000] = '"' + rows[15000].replace(",", '",', 1)            # a quoted cell
    cells = rows[20000].split(",")
    cells[4] = "true"                                               # pktcount, boolean text
    rows[20000] = ",".join(cells)
    text = "".join(header + rows)
    expected, error = row_by_row(text, SDN, "f.csv")
    assert error is None and len(expected) == len(rows) - 1
    got, error = blocks_read(text, SDN, "f.csv")
    assert error is None
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[5, 3:]).all() and got[19999, 0] == 1.0


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_crlf_and_blank_lines_read_as_csv_reads_them_when_the_last_column_is_a_feature(newline):
    manifest = _manifest(["n", "Protocol_UDP"], {"Protocol_UDP": ["Protocol", "UDP"]},
                         {"Protocol": ["UDP", "TCP"]})
    rows = ["x,n,Protocol", "1,2.5,UDP", "2,,TCP", "", "3,NA, NA ", "4,true,UDP", "", "5,7,TCP"]
    for columns in (["x", "n", "Protocol"], ["n"]):          # wide rows, and one-cell rows
        picked = [i for i, name in enumerate(["x", "n", "Protocol"]) if name in columns]
        lines = [",".join(row.split(",")[i] for i in picked) if row else "" for row in rows]
        text = newline.join(lines) + newline
        used = manifest if "Protocol" in columns else _manifest(["n"])
        expected, error = row_by_row(text, used, "f.csv")
        got, got_error = blocks_read(text, used, "f.csv")
        # A one-cell row whose cell is empty is a blank line to csv: skipped, like the real blanks.
        assert error is None and got_error is None and len(got) == (5 if len(columns) > 1 else 4)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("damage", ["late bad cell after an earlier one", "short row", "long row", "unseen category",
                                    "inf", "beyond float32", "bad cell in the last row"])
def test_a_bad_row_deep_in_a_big_file_gets_the_row_by_row_message_after_every_row_before_it(damage):
    header, rows = big_text(4)
    rows = list(rows)
    target = 17_321
    cells = rows[target].rstrip("\n").split(",")
    position = {name: i for i, name in enumerate(header[0].strip().split(","))}
    if damage == "late bad cell after an earlier one":
        # A later column of this row and an earlier column of a later row are bad: the message
        # names the first bad cell in file order, as a row-by-row reader does.
        cells[position["dur"]] = "x7"
        later = rows[target + 3].rstrip("\n").split(",")
        later[position["pktcount"]] = "inf"
        rows[target + 3] = ",".join(later) + "\n"
    elif damage == "short row":
        cells = cells[:10]
    elif damage == "long row":
        cells = cells + ["7"]
    elif damage == "unseen category":
        cells[position["Protocol"]] = "ARP"
    elif damage == "inf":
        cells[position["bytecount"]] = "-inf"
    elif damage == "beyond float32":
        cells[position["pktcount"]] = "1e39"
    else:
        target = len(rows) - 1
        cells = rows[target].rstrip("\n").split(",")
        cells[position["dur"]] = "maybe"
    rows[target] = ",".join(cells) + "\n"
    text = "".join(header + rows)
    expected_rows, expected = row_by_row(text, SDN, "f.csv")
    assert expected is not None and f"line {target + 2}," in expected
    got_rows, got = blocks_read(text, SDN, "f.csv", batch_rows=1000)
    assert got == expected
    # Every full batch of 1,000 rows before it was yielded first (as a row-by-row batcher does).
    assert len(got_rows) >= len(expected_rows) // 1000 * 1000 > 0
    np.testing.assert_array_equal(got_rows, expected_rows[:len(got_rows)])


def test_record_blocks_end_only_at_record_boundaries():
    text = b'a,b\n1,2\n3,"x\ny"\n4,5\n6,7'
    for size in range(1, len(text) + 1):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        blocks = list(record_blocks(iter(chunks)))
        assert b"".join(blocks) == text
        for block in blocks[:-1]:
            assert block.endswith(b"\n") and block.count(b'"') % 2 == 0


# -- bulk output ---------------------------------------------------------------------------------

@pytest.mark.parametrize("unit, warming, kind", [(False, False, "spread"), (True, False, "spread"),
                                                  (True, True, "spread"), (True, False, "int8"),
                                                  (False, False, "int8 and -0")])
def test_verdict_text_is_the_bytes_csv_writer_makes(unit, warming, kind):
    """Also for an int8 model's few distinct scores, each formatted once (``csv_input._formatted``)."""
    rng = np.random.default_rng(7)
    n = 500
    if kind == "spread":
        scores = np.concatenate([rng.lognormal(0, 4, n - 6), [0.0, -0.0, 1e-12, 3.5e38, 1e39, np.nan]])
    else:
        levels = np.concatenate([np.arange(0, 256) / 255, [np.nan, np.inf, 1e39]])
        scores = np.round(rng.choice(levels, n), 3)
        if kind == "int8 and -0":
            scores[[5, 77]] = -0.0               # np.unique would take it for 0.0: formatted one by one
    verdicts = Verdicts(scores=scores, is_anomaly=rng.random(n) < 0.3, predicted=rng.integers(0, 3, n),
                        warming_up=(np.arange(n) < 23) if warming else None,
                        unit_score=rng.integers(0, 65536, n) / 65535 if unit else None)
    manifest = _manifest(["a"])
    manifest.classes = ["normal", 'syn, "flood"', "udp"]
    expected = io.StringIO()
    csv.writer(expected).writerows(verdict_rows(41, verdicts, manifest))
    assert verdict_text(41, verdicts, manifest) == expected.getvalue()


def test_bench_reports_the_run_pipeline_rows_per_second(built_bundle):
    import json

    result = CliRunner().invoke(main, ["bench", str(built_bundle), "--invokes", "50", "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["run"]
    assert run["rows"] == 20_000 and run["rows_per_second"] > 0 and run["rows_per_cpu_second"] > 0
    text = CliRunner().invoke(main, ["bench", str(built_bundle), "--invokes", "50"]).output
    assert "tinyad run pipeline (read, parse, scale, invoke, score, format): " in text


# -- live input ----------------------------------------------------------------------------------

def _line_within(stream, seconds: float) -> str:
    """The next line of a subprocess's stdout, or '' if none arrives within ``seconds``."""
    deadline = time.monotonic() + seconds
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        byte = os.read(stream.fileno(), 1)
        if not byte:
            break
        buffered += byte
        if byte == b"\n":
            return buffered.decode()
    return buffered.decode()


def test_live_input_gets_its_first_verdict_before_the_input_closes(built_bundle):
    header, rows = big_text(1)
    # As a user's shell runs it: stdout a pipe, so block-buffered unless run flushes each verdict.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([*TINYAD, "run", str(built_bundle), "--input", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(header[0].encode())
        proc.stdin.flush()
        # The verdict columns come out before any row is in: a live reader knows the run started.
        assert _line_within(proc.stdout, 60) == "row,status,score,unit_score,is_anomaly,class\r\n"
        proc.stdin.write(rows[0].encode())
        proc.stdin.flush()
        first = _line_within(proc.stdout, 10)
        assert first.startswith("0,scored,") and first.endswith("\r\n")
        assert proc.poll() is None                    # still running: the input is open
        proc.stdin.write(rows[1].encode())
        proc.stdin.flush()
        assert _line_within(proc.stdout, 10).startswith("1,scored,")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == b""
        assert b"2 rows" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stream_sends_a_live_row_in_the_next_frame_before_the_input_closes(built_bundle):
    """`tinyad stream --input -` over a real pty pair to a real device agent: a row piped in gets
    its verdict while the input stays open (not when a frame or a batch is full, nor at EOF)."""
    from fault_relay import Relay
    from test_link import agent

    header, rows = big_text(1)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    with Relay(baud=115_200) as relay, agent(relay.device_port, built_bundle):
        proc = subprocess.Popen([*TINYAD, "stream", "--port", relay.host_port, "--model", str(built_bundle),
                                 "--input", "-", "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            proc.stdin.write(header[0].encode())
            proc.stdin.flush()
            assert _line_within(proc.stdout, 60) == "row,status,score,unit_score,is_anomaly,class\r\n"
            proc.stdin.write(rows[0].encode())
            proc.stdin.flush()
            assert _line_within(proc.stdout, 10).startswith("0,scored,")
            assert proc.poll() is None                    # still running: the input is open
            proc.stdin.write(rows[1].encode())
            proc.stdin.flush()
            assert _line_within(proc.stdout, 10).startswith("1,scored,")
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
            assert proc.stdout.read() == b""
            assert "2 samples" in proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bench_measures_the_run_pipeline_on_a_given_csv(built_bundle, tmp_path):
    import json

    header, rows = big_text(1)
    data = tmp_path / "rows.csv"
    data.write_text(header[0] + "".join(rows[:777]))
    result = CliRunner().invoke(main, ["bench", str(built_bundle), "--invokes", "50", "--json", "--csv", str(data)])
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["run"]
    assert run["rows"] == 777 and run["source"] == str(data) and run["rows_per_second"] > 0
    text = CliRunner().invoke(main, ["bench", str(built_bundle), "--invokes", "50", "--csv", str(data)]).output
    assert f"over the 777 rows of {data}, start-up excluded" in text
    missing = subprocess.run([*TINYAD, "bench", str(built_bundle), "--csv", str(tmp_path / "nope.csv")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"Error: {tmp_path / 'nope.csv'}: no such file"]


# -- temporal bundles in blocks of windows ---------------------------------------------------------

@pytest.mark.slow
def test_an_unrolled_lstm_bundle_scores_blocks_of_windows_as_one_by_one(tmp_path, shared_data):
    """[quantize] unroll_lstm: no fused LSTM op, a model the runner resizes to a block of windows,
    and `tinyad run` verdicts byte-identical whether windows go one per invoke or in blocks."""
    from conftest import temporal_recipe
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    path = temporal_recipe(tmp_path, "lstm", rows=1000)
    path.write_text(path.read_text().replace("[quantize]\n", "[quantize]\nunroll_lstm = true\n"))
    bundle = tmp_path / "bundle"
    build(load_recipe(path), shared_data, bundle, tmp_path / "work")
    manifest = load_manifest(bundle)
    assert manifest.recipe["quantize"]["unroll_lstm"] is True
    assert "LSTM converted unrolled" in CliRunner().invoke(main, ["info", str(bundle)]).output
    ops = {op["op_name"] for op in load_runtime().open(bundle / MODEL_FILE)._get_ops_details()}
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and {"LOGISTIC", "TANH"} <= ops
    model = TFLiteModel(bundle / MODEL_FILE, load_runtime())
    windows = np.random.default_rng(4).integers(-128, 128, size=(300, manifest.window, len(manifest.features)),
                                                   dtype=np.int64).astype(np.int8)
    assert np.array_equal(model.invoke_all(windows), model.invoke_all(windows, batched=False))
    assert model._batched_rows == 300                 # it really ran as one resized invoke
    with gzip.open(shared_data / "ton_iot/Train_Test_IoT_Weather.csv.gz", "rt", newline="") as handle:
        rows = tmp_path / "weather.csv"
        rows.write_text("".join(line for line, _ in zip(handle, range(1201))))
    verdicts = []
    for batch in (1, 1024):
        out = tmp_path / f"verdicts-{batch}.csv"
        result = CliRunner().invoke(main, ["run", str(bundle), "--input", str(rows), "--output", str(out),
                                           "--batch-rows", str(batch)])
        assert result.exit_code == 0, result.output
        verdicts.append(out.read_bytes())
    assert verdicts[0].count(b"\r\n") == 1201 and verdicts[0].count(b",warming_up,") == manifest.window - 1
    assert verdicts[0] == verdicts[1]


def test_unroll_lstm_on_a_model_without_an_lstm_is_a_clear_error():
    from firmware_host.errors import QuantizationError
    from toolchain.keras_env import import_tf
    from toolchain.quantize import quantize
    from toolchain.recipe import QuantizeSpec

    _, keras = import_tf()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(QuantizationError, match="no LSTM layer at its top level"):
        quantize(model, np.zeros((8, 4), np.float32), "zeros", QuantizeSpec(unroll_lstm=True))

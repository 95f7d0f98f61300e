"""The input rules of firmware_host.values, the same in build and run: row width, missing-value
tokens, boolean text, non-finite numbers and unseen categories, each refused (or read) with an
exact one-line message naming file, line and column.

Library tests of the shared module first, then the build-side loaders, then `tinyad run` and
`tinyad stream` on the real small bundle of conftest."""

from __future__ import annotations

import csv
import gzip
import io
import math
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.csv_input import read_batches
from firmware_host.errors import DataError
from firmware_host.manifest import Manifest, Quantization, Scaler, load_manifest
from firmware_host.values import (MISSING_TOKENS, CellError, category_cell, is_missing, parse_bool, parse_cell,
                                  parse_column, records)
from toolchain.datasets import load_dataset

from conftest import SLICE

# -- the shared module ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [*MISSING_TOKENS, "na", " n/a ", "NAN", "nan", "NULL", "none", "  ", "\t?"])
def test_missing_tokens_in_any_case_read_as_nan(cell):
    assert is_missing(cell)
    assert math.isnan(parse_cell(cell))
    assert category_cell(cell, {"UDP"}) is None


@pytest.mark.parametrize("cell, value", [("true", 1.0), ("false  ", 0.0), (" TRUE", 1.0), ("False", 0.0),
                                         ("yes", 1.0), ("No", 0.0), ("YES ", 1.0)])
def test_boolean_text_reads_as_one_or_zero(cell, value):
    assert parse_bool(cell) == value and parse_cell(cell) == value


def test_other_words_are_not_booleans():
    assert parse_bool("on") is None and parse_bool("1") is None and parse_bool("t") is None


@pytest.mark.parametrize("cell, value", [("1.5", 1.5), (" 2 ", 2.0), ("-3e2", -300.0), ("+.5", 0.5),
                                         ("3.4028234663852886e38", 3.4028234663852886e38), ("-0", 0.0)])
def test_numbers_read_as_python_reads_them(cell, value):
    assert parse_cell(cell) == value


@pytest.mark.parametrize("cell, reason", [
    ("inf", "'inf' is not a finite number"),
    ("-inf", "'-inf' is not a finite number"),
    (" Infinity ", "'Infinity' is not a finite number"),
    ("1e999", "'1e999' is beyond float32's range (+-3.4e38)"),
    ("-1e999", "'-1e999' is beyond float32's range (+-3.4e38)"),
    ("1e39", "'1e39' is beyond float32's range (+-3.4e38)"),
    ("-nan", "'-nan' is not a number (write an empty cell for a missing value)"),
    ("x7", "'x7' is not a number"),
    ("1,5", "'1,5' is not a number"),
])
def test_non_numbers_non_finite_and_out_of_range_cells_are_refused(cell, reason):
    with pytest.raises(CellError) as info:
        parse_cell(cell)
    assert str(info.value) == reason


def test_parse_column_is_parse_cell_per_cell_and_names_the_first_bad_one():
    cells = ["1", " 2.5", "", "true", "NA", "-4e3", "no"]
    np.testing.assert_array_equal(parse_column(cells), [parse_cell(c) for c in cells])
    np.testing.assert_array_equal(parse_column(["1", "2"]), [1.0, 2.0])          # the fast path
    for column, position in ((["1", "2", "inf", "x"], 2), (["1", "", "x", "inf"], 2), (["nan", "1e40"], 1)):
        with pytest.raises(CellError) as info:
            parse_column(column)
        assert info.value.position == position


def test_an_unseen_category_is_refused_naming_the_known_ones():
    assert category_cell(" TCP ", {"UDP", "TCP"}) == "TCP"
    assert category_cell("ARP", None) == "ARP"                    # a bundle without a category list
    with pytest.raises(CellError) as info:
        category_cell("ARP", {"UDP", "TCP", "ICMP"})
    assert str(info.value) == "'ARP' is not a category the model was built with (ICMP, TCP, UDP)"
    with pytest.raises(CellError) as info:
        category_cell("zz", {f"s{i:02d}" for i in range(30)})
    assert str(info.value).endswith("s10, s11, ... (30 in all))")


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e39])
def test_rows_given_directly_obey_the_float32_range_too(value):
    from firmware_host.preprocess import scale_rows

    scaler = Scaler([0.0, 0.0], [False, True], [0.0, 0.0], [1.0, 1.0], 6.0)
    assert scale_rows(np.array([[1.0, math.nan], [3.4e38, -3.4e38]]), scaler).shape == (2, 2)
    with pytest.raises(DataError) as info:
        scale_rows(np.array([[1.0, 2.0], [3.0, value]]), scaler)
    assert str(info.value) == f"row 1, feature 2 of 2: {value} is not a finite number within float32's range"


def _records(text: str) -> list:
    reader = csv.reader(io.StringIO(text))
    return list(records(reader, next(reader), "f.csv"))


def test_records_give_each_row_its_first_line_and_skip_blank_lines():
    text = 'a,b,c\n1,2,3\n\n4,"five\nlines",6\n7,8,9\n'
    assert _records(text) == [(2, ["1", "2", "3"]), (4, ["4", "five\nlines", "6"]), (6, ["7", "8", "9"])]


@pytest.mark.parametrize("text, message", [
    ("a,b,c\n1,2,3\n\n4,5\n", "f.csv line 4, column 'c': missing; the row has 2 cells, the header 3"),
    ("a,b,c\n1,2,3\n4,5,6,7\n", "f.csv line 3, column 4: the row has 4 cells, the header only 3"),
    ('a,b,c\n"1\n",2,3\n4\n', "f.csv line 4, column 'b': missing; the row has 1 cells, the header 3"),
    ("a,b,c\n1,2,3\n   \n", "f.csv line 3, column 'b': missing; the row has 1 cells, the header 3"),
])
def test_a_short_or_long_row_is_refused_naming_line_and_column(text, message):
    with pytest.raises(DataError) as info:
        _records(text)
    assert str(info.value) == message


# -- build and run read every cell alike -------------------------------------------------------

SDN_HEADER = "dt,switch,src,dst,pktcount,Protocol,label\n"
CELLS = ["7", " 8 ", "", "NA", "n/a", "NaN", "nan", "null", "None", "-", "?", "true", "FALSE ", "yes", "No",
         "1e3", "-2.5E-3", "1_000", "3.4028234663852886e38", "12345678901234567890"]
PROTOCOLS = ["UDP", " TCP ", "ICMP", "", "NA", "?", "UDP"]


def _manifest(features, one_hot=None, categories=None) -> Manifest:
    """The fields a CSV reader uses; the model fields are placeholders no test reads."""
    n = len(features)
    return Manifest(name="t", detector="ae", features=features,
                    scaler=Scaler([0.0] * n, [False] * n, [0.0] * n, [1.0] * n, 6.0),
                    input_quantization=Quantization(1.0, 0), output_quantization=Quantization(1.0, 0),
                    threshold=0.0, classes=["normal", "anomaly"], normal_class="normal", sha256="",
                    input_shape=[1, n], output_shape=[1, n], one_hot=one_hot or {}, categories=categories or {})


def test_build_loader_and_run_reader_read_the_same_values(tmp_path):
    rows = [f"{i},1,a,b,{cell},{PROTOCOLS[i % len(PROTOCOLS)]},{i % 2}\n" for i, cell in enumerate(CELLS)]
    (tmp_path / "sdn.csv").write_text(SDN_HEADER + "".join(rows))
    built = load_dataset("sdn_ddos", tmp_path, "sdn.csv")
    features = ["pktcount", "Protocol_UDP", "Protocol_TCP", "Protocol_ICMP"]
    assert built.categories == {"Protocol": ("UDP", "TCP", "ICMP")}
    manifest = _manifest(features, {f: list(built.one_hot[f]) for f in features[1:]},
                         {"Protocol": list(built.categories["Protocol"])})
    with open(tmp_path / "sdn.csv", newline="") as handle:
        ran = np.vstack(list(read_batches(handle, manifest, "sdn.csv", batch_rows=4)))
    np.testing.assert_array_equal(ran, built.features[features].to_numpy())
    # What both read, spelled out: missing tokens are NaN, boolean text 1/0, a missing protocol NaN.
    pktcount = [7, 8] + [math.nan] * 9 + [1, 0, 1, 0, 1000, -0.0025, 1000, 3.4028234663852886e38,
                                          1.2345678901234567e19]
    np.testing.assert_array_equal(ran[:, 0], pktcount)
    np.testing.assert_array_equal(ran[:4, 1:], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [math.nan] * 3])


@pytest.mark.parametrize("cell, reason", [
    ("inf", "'inf' is not a finite number"),
    ("-inf", "'-inf' is not a finite number"),
    ("1e999", "'1e999' is beyond float32's range (+-3.4e38)"),
    ("maybe", "'maybe' is not a number"),
])
def test_build_and_run_refuse_a_bad_cell_with_the_same_message(tmp_path, cell, reason):
    text = SDN_HEADER + "1,1,a,b,5,UDP,0\n\n3,1,a,b,6,TCP,1\n4,1,a,b,{},ICMP,0\n".format(cell)
    path = tmp_path / "sdn.csv"
    path.write_text(text)
    expected = f"{path} line 5, column 'pktcount': {reason}"
    with pytest.raises(DataError) as built:
        load_dataset("sdn_ddos", tmp_path, "sdn.csv")
    assert str(built.value) == expected
    with open(path, newline="") as handle, pytest.raises(DataError) as ran:
        list(read_batches(handle, _manifest(["pktcount"]), str(path)))
    assert str(ran.value) == expected


@pytest.mark.parametrize("row, message", [
    ("4,1,a,b,6\n", "line 4, column 'Protocol': missing; the row has 5 cells, the header 7"),
    ("4,1,a,b,6,UDP,0,extra\n", "line 4, column 8: the row has 8 cells, the header only 7"),
    ("4,1,a,b,6,ARP,0\n", "line 4, column 'Protocol': 'ARP' is not a category the model was built with "
                          "(ICMP, TCP, UDP)"),
])
def test_build_and_run_refuse_a_bad_row_with_the_same_message(tmp_path, row, message):
    path = tmp_path / "sdn.csv"
    path.write_text(SDN_HEADER + "1,1,a,b,5,UDP,0\n3,1,a,b,6,TCP,1\n" + row)
    with pytest.raises(DataError) as built:
        load_dataset("sdn_ddos", tmp_path, "sdn.csv")
    assert str(built.value) == f"{path} {message}"
    manifest = _manifest(["pktcount", "Protocol_UDP"], {"Protocol_UDP": ["Protocol", "UDP"]},
                         {"Protocol": ["UDP", "TCP", "ICMP"]})
    with open(path, newline="") as handle, pytest.raises(DataError) as ran:
        list(read_batches(handle, manifest, str(path)))
    assert str(ran.value) == f"{path} {message}"


def test_a_bundle_without_a_category_list_reads_any_category(tmp_path):
    """Bundles built before categories were recorded keep working: an unknown value is 0."""
    text = SDN_HEADER + "1,1,a,b,5,ARP,0\n"
    manifest = _manifest(["Protocol_UDP"], {"Protocol_UDP": ["Protocol", "UDP"]})
    assert next(read_batches(io.StringIO(text), manifest, "x")).tolist() == [[0.0]]


# -- TON_IoT Garage_Door: 0/1 mixed with true/false -------------------------------------------

def write_garage_door(path: Path, rows: int = 600, seed: int = 0) -> None:
    """A gzip CSV in the layout of TON_IoT's Train_Test_IoT_Garage_Door.csv (date, padded time,
    door_state, sphone_signal, label, type) whose ``sphone_signal`` mixes 0/1 with
    ``true``/``false  ``, as the published file does. Attack rows open the door without a phone."""
    rng = np.random.default_rng(seed)
    lines = ["date,time,door_state,sphone_signal,label,type\n"]
    for i in range(rows):
        attack = (i // 50) % 4 == 3
        phone = int(rng.random() < (0.1 if attack else 0.9))
        spelled = {0: ["0", "false  "], 1: ["1", "true"]}[phone][int(rng.random() < 0.5)]
        door = "open" if (rng.random() < 0.8) == attack else "closed"
        minutes, seconds = divmod(i, 60)
        lines.append(f"25-Apr-19, {10 + minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d} ,{door},{spelled},"
                     f"{int(attack)},{'scanning' if attack else 'normal'}\n")
    with gzip.open(path, "wt", newline="") as handle:
        handle.write("".join(lines))


def test_garage_door_boolean_text_loads_through_the_ton_iot_loader(tmp_path):
    # The published Garage_Door file is not in ../shared/data; this one has its layout and cells.
    write_garage_door(tmp_path / "Train_Test_IoT_Garage_Door.csv.gz")
    with gzip.open(tmp_path / "Train_Test_IoT_Garage_Door.csv.gz", "rt") as handle:
        spelled = {line.split(",")[3] for line in handle.readlines()[1:]}
    assert spelled == {"0", "1", "true", "false  "}
    d = load_dataset("ton_iot", tmp_path, "Train_Test_IoT_Garage_Door.csv.gz")
    assert list(d.features.columns) == ["sphone_signal", "door_state_closed", "door_state_open"]
    assert set(d.features["sphone_signal"]) == {0.0, 1.0}
    assert d.categories == {"door_state": ("closed", "open")}
    assert set(d.classes) == {"normal", "attack"}


GARAGE_RECIPE = """
name = "garage"
seed = 1
[data]
loader = "ton_iot"
path = "garage.csv.gz"
relative_to = "recipe"
[features]
top_k = 0
sweep = []
[detector]
kind = "vae_dnn"
hidden = [8]
latent = 2
classifier = [8]
epochs = 3
classifier_epochs = 3
batch_size = 32
[quantize]
representative_rows = 100
golden_rows = 8
[verify]
max_f1_drop = 1.0
"""


@pytest.mark.slow
def test_garage_door_builds_and_runs_with_boolean_text_and_refuses_an_unseen_door_state(tmp_path):
    from toolchain.pipeline import build
    from toolchain.recipe import load_recipe

    write_garage_door(tmp_path / "garage.csv.gz")
    (tmp_path / "garage.toml").write_text(GARAGE_RECIPE)
    bundle = tmp_path / "bundle"
    build(load_recipe(tmp_path / "garage.toml"), tmp_path, bundle, tmp_path / "work")
    manifest = load_manifest(bundle)
    assert manifest.categories == {"door_state": ["closed", "open"]}
    result = invoke("run", bundle, "--input", tmp_path / "garage.csv.gz", "--output", tmp_path / "v.csv")
    assert result.exit_code == 0, result.output
    assert len(read_verdicts(tmp_path / "v.csv")) == 600
    with gzip.open(tmp_path / "garage.csv.gz", "rt") as handle:
        lines = handle.readlines()
    lines[10] = lines[10].replace(",open,", ",ajar,").replace(",closed,", ",ajar,")
    (tmp_path / "ajar.csv").write_text("".join(lines))
    result = invoke("run", bundle, "--input", tmp_path / "ajar.csv", "--output", tmp_path / "a.csv")
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path / 'ajar.csv'} line 11, column 'door_state': 'ajar' is not a "
                             "category the model was built with (closed, open)\n")
    assert not (tmp_path / "a.csv").exists()


# -- tinyad run on the real small bundle --------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_verdicts(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def slice_rows(count: int) -> tuple[list[str], list[list[str]]]:
    """The shipped SDN slice's header and its first ``count`` rows, as cells."""
    with gzip.open(SLICE, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [next(reader) for _ in range(count)]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("".join(",".join(cells) + "\n" for cells in [header, *rows]))
    return path


def numeric_feature(bundle: Path, header: list[str]) -> str:
    return next(f for f in load_manifest(bundle).features if f in header)


def test_the_built_bundle_records_its_one_hot_categories(built_bundle):
    manifest = load_manifest(built_bundle)
    assert {column for column, _ in manifest.one_hot.values()} == {"Protocol"}
    assert manifest.categories == {"Protocol": ["UDP", "TCP", "ICMP"]}


def _refused(bundle: Path, path: Path, tmp_path: Path) -> str:
    out = tmp_path / "verdicts.csv"
    result = invoke("run", bundle, "--input", path, "--output", out, "--batch-rows", 2)
    assert result.exit_code == 1 and result.stdout == ""
    assert not out.exists() and not list(tmp_path.glob("verdicts.csv.tmp-*"))
    return result.output


def test_run_refuses_a_row_cut_to_10_of_23_columns(built_bundle, tmp_path):
    header, rows = slice_rows(5)
    assert len(header) == 23
    rows[3] = rows[3][:10]
    path = write_rows(tmp_path / "short.csv", header, rows)
    assert _refused(built_bundle, path, tmp_path) == (
        f"Error: {path} line 5, column '{header[10]}': missing; the row has 10 cells, the header 23\n")


def test_run_refuses_a_long_row(built_bundle, tmp_path):
    header, rows = slice_rows(5)
    rows[2] = rows[2] + ["7"]
    path = write_rows(tmp_path / "long.csv", header, rows)
    assert _refused(built_bundle, path, tmp_path) == (
        f"Error: {path} line 4, column 24: the row has 24 cells, the header only 23\n")


@pytest.mark.parametrize("cell, reason", [("inf", "'inf' is not a finite number"),
                                          ("-inf", "'-inf' is not a finite number"),
                                          ("1e999", "'1e999' is beyond float32's range (+-3.4e38)"),
                                          ("1e39", "'1e39' is beyond float32's range (+-3.4e38)")])
def test_run_refuses_non_finite_and_out_of_range_values(built_bundle, tmp_path, cell, reason):
    header, rows = slice_rows(4)
    name = numeric_feature(built_bundle, header)
    rows[1][header.index(name)] = cell
    path = write_rows(tmp_path / "inf.csv", header, rows)
    assert _refused(built_bundle, path, tmp_path) == f"Error: {path} line 3, column '{name}': {reason}\n"


def test_run_refuses_an_unseen_protocol(built_bundle, tmp_path):
    header, rows = slice_rows(4)
    rows[2][header.index("Protocol")] = "ARP"
    path = write_rows(tmp_path / "arp.csv", header, rows)
    assert _refused(built_bundle, path, tmp_path) == (
        f"Error: {path} line 4, column 'Protocol': 'ARP' is not a category the model was built with "
        "(ICMP, TCP, UDP)\n")


def _scores(bundle: Path, path: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / f"{path.stem}-verdicts.csv"
    result = invoke("run", bundle, "--input", path, "--output", out)
    assert result.exit_code == 0, result.output
    return [v["score"] for v in read_verdicts(out)]


def _inputs(bundle: Path, header: list[str], rows: list[list[str]]) -> list[bytes]:
    """The int8 model input of each row, as the run side computes it."""
    from firmware_host.runner import prepare_rows

    manifest = load_manifest(bundle)
    text = "".join(",".join(cells) + "\n" for cells in [header, *rows])
    return [bytes(q) for q in prepare_rows(manifest, next(read_batches(io.StringIO(text), manifest, "x")))]


def _with_cell(row: list[str], column: int, cells: list[str]) -> list[list[str]]:
    return [row[:column] + [cell] + row[column + 1:] for cell in cells]


def test_run_reads_every_missing_token_as_an_empty_cell_and_boolean_text_as_1_or_0(built_bundle, tmp_path):
    header, rows = slice_rows(1)
    # A feature whose int8 input differs for 0, 1 and missing, so the input tells which was read.
    column = next(header.index(f) for f in load_manifest(built_bundle).features if f in header
                  and len(set(_inputs(built_bundle, header, _with_cell(rows[0], header.index(f), ["0", "1", ""]))))
                  == 3)
    missing = [*MISSING_TOKENS, "na", "NAN", "nan", " NULL ", "none"]
    ones, zeros = ["1", "true", "TRUE ", "yes"], ["0", "false  ", "No"]
    variants = _with_cell(rows[0], column, missing + ones + zeros)
    groups = (slice(0, len(missing)), slice(len(missing), -len(zeros)), slice(-len(zeros), None))
    inputs = _inputs(built_bundle, header, variants)
    assert [len(set(inputs[group])) for group in groups] == [1, 1, 1]     # each spelling group: one input
    assert len({inputs[group][0] for group in groups}) == 3               # missing, 1 and 0 differ
    scores = _scores(built_bundle, write_rows(tmp_path / "tokens.csv", header, variants), tmp_path)
    assert [len(set(scores[group])) for group in groups] == [1, 1, 1]     # and tinyad run agrees


def test_run_reads_a_missing_protocol_as_missing(built_bundle, tmp_path):
    header, rows = slice_rows(1)
    variants = []
    for cell in ("", "NA", "?", " none "):
        variants.append(list(rows[0]))
        variants[-1][header.index("Protocol")] = cell
    assert len(set(_scores(built_bundle, write_rows(tmp_path / "proto.csv", header, variants), tmp_path))) == 1


# -- tinyad stream: the same refusal reaches the host's one error line --------------------------

TINYAD = [sys.executable, "-m", "firmware_host.cli"]


@contextmanager
def _agent(port: str, bundle: Path):
    """``tinyad device`` in a subprocess, returned once it says it is listening."""
    proc = subprocess.Popen([*TINYAD, "device", "--port", port, "--model", str(bundle)], stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        said = []
        while time.monotonic() < deadline and not any("listening on" in line for line in said):
            line = proc.stderr.readline()
            if not line:
                break
            said.append(line)
        assert any("listening on" in line for line in said), "".join(said)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_stream_stops_at_a_short_row_after_every_row_before_it_has_its_verdict(built_bundle, tmp_path):
    from fault_relay import Relay

    header, rows = slice_rows(400)
    rows[300] = rows[300][:10]                 # file line 302
    path = write_rows(tmp_path / "short.csv", header, rows)
    out = tmp_path / "streamed.csv"
    with Relay() as relay, _agent(relay.device_port, built_bundle):
        done = subprocess.run([*TINYAD, "stream", "--port", relay.host_port, "--model", str(built_bundle),
                               "--input", str(path), "--output", str(out), "--quiet", "--batch-rows", "100"],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]      # the error, then where the verdicts that arrived are
    assert last.startswith(f"Error: {path} line 302, column '{header[10]}': missing; the row has 10 cells, "
                           "the header 23")
    assert str(out) in last
    streamed = read_verdicts(out)
    assert [int(v["row"]) for v in streamed] == list(range(300))
    assert [v["score"] for v in streamed] == _scores(built_bundle, write_rows(tmp_path / "good.csv", header,
                                                                              rows[:300]), tmp_path)

"""Loaders on the real data sets, and every bad input a user can hand them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from firmware_host.errors import DataError
from toolchain.datasets import first_window_row, load_dataset, resolve_data_root

MACHINE = "nab/data/realKnownCause/machine_temperature_system_failure.csv"
NBAIOT = ["n_baiot/benign_traffic.csv", "n_baiot/scan.csv", "n_baiot/doorbell_udp.csv", "n_baiot/thermostat_udp.csv"]


def test_sdn_ddos_keeps_identifiers_out_and_nans_in(shared_data):
    d = load_dataset("sdn_ddos", shared_data, "sdn_ddos/dataset_sdn.csv.gz")
    assert len(d.classes) == 104345
    values, counts = np.unique(d.classes, return_counts=True)
    assert dict(zip(values, counts)) == {"attack": 40784, "benign": 63561}
    assert not {"src", "dst", "dt", "switch", "label"} & set(d.features.columns)
    assert list(d.identifiers.columns) == ["src", "dst", "dt", "switch"]
    assert d.features["rx_kbps"].isna().sum() == 506 and d.features["tot_kbps"].isna().sum() == 506
    assert d.one_hot["Protocol_ICMP"] == ("Protocol", "ICMP") and d.features["Protocol_UDP"].isin([0, 1]).all()
    assert d.categories == {"Protocol": ("UDP", "TCP", "ICMP")}
    np.testing.assert_array_equal(d.time, d.identifiers["dt"].to_numpy())


def test_nbaiot_class_is_the_file(shared_data):
    d = load_dataset("nbaiot", shared_data, NBAIOT)
    assert d.features.shape == (1196, 115) and d.normal_class == "benign_traffic"
    assert sorted(set(d.classes)) == ["benign_traffic", "doorbell_udp", "scan", "thermostat_udp"]


def test_ton_iot_label_and_type_targets(shared_data):
    d = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Weather.csv.gz")
    assert list(d.features.columns) == ["temperature", "pressure", "humidity"]
    assert set(d.classes) == {"normal", "attack"} and d.time is not None and np.all(np.isfinite(d.time))
    typed = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Weather.csv.gz", target="type")
    assert "ddos" in set(typed.classes) and typed.normal_class == "normal"
    fridge = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Fridge.csv.gz")
    assert fridge.one_hot["temp_condition_high"] == ("temp_condition", "high")
    assert fridge.categories == {"temp_condition": ("high", "low")}
    light = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Motion_Light.csv.gz")
    assert list(light.features.columns) == ["motion_status", "light_status_off", "light_status_on"]
    assert light.categories == {"light_status": ("off", "on")}


def test_ton_iot_time_is_date_and_time_in_seconds(shared_data):
    d = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Weather.csv.gz")
    # Row 1 is "25-Apr-19,17:33:16": 2019-04-25T17:33:16 = 1556213596 s after 1970 (no time zone).
    assert d.time[0] == 1556213596.0
    assert len(np.unique(d.time)) > 15000              # whole seconds, not truncated to kiloseconds
    assert (d.time.max() - d.time.min()) / 86400 == pytest.approx(28.06, abs=0.01)
    fridge = load_dataset("ton_iot", shared_data, "ton_iot/Train_Test_IoT_Fridge.csv.gz")
    # The fridge's time cells are padded (" 19:19:40 "); "31-Mar-19" is its earliest date.
    assert np.datetime_as_string(np.datetime64(int(fridge.time.min()), "s"))[:10] == "2019-03-31"
    assert list(fridge.features.columns) == ["fridge_temperature", "temp_condition_high", "temp_condition_low"]
    assert fridge.features["temp_condition_low"].isin([0, 1]).all()


def test_nab_series_classes_windows_and_first_window_row(shared_data):
    d = load_dataset("nab", shared_data, MACHINE)
    assert list(d.features.columns) == ["value"] and len(d.classes) == 22695 and d.normal_class == "normal"
    assert len(d.windows) == 4 and "Numenta" in d.citation and "MIT" in d.citation
    start = np.datetime64("2013-12-10T06:25:00", "s").astype(np.int64)
    assert d.windows[0][0] == start
    # Windows are inclusive: the row stamped exactly at a window's start or end is an anomaly.
    for begin, end in d.windows:
        assert set(d.classes[(d.time == begin) | (d.time == end)]) == {"anomaly"}
    assert (d.classes == "anomaly").sum() == 2268
    first = first_window_row(d)
    assert first == 2126 and d.time[first] == start and (d.classes[:first] == "normal").all()
    part = d.subset(np.arange(100, 300))
    assert part.windows == d.windows and len(part.classes) == 200


def _nab_tree(tmp_path: Path, series: str, windows: str) -> Path:
    (tmp_path / "nab" / "data" / "cat").mkdir(parents=True)
    (tmp_path / "nab" / "labels").mkdir()
    (tmp_path / "nab" / "data" / "cat" / "s.csv").write_text(series)
    (tmp_path / "nab" / "labels" / "combined_windows.json").write_text(windows)
    return tmp_path


GOOD_SERIES = "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n2014-01-01 00:10:00,3\n"
GOOD_WINDOWS = '{"cat/s.csv": [["2014-01-01 00:05:00.000000", "2014-01-01 00:10:00.000000"]]}'


def test_nab_small_tree(tmp_path):
    d = load_dataset("nab", _nab_tree(tmp_path, GOOD_SERIES, GOOD_WINDOWS), "nab/data/cat/s.csv")
    assert d.classes.tolist() == ["normal", "anomaly", "anomaly"] and first_window_row(d) == 1
    assert np.diff(d.time).tolist() == [300.0, 300.0]


@pytest.mark.parametrize("series, windows, path, expect", [
    (GOOD_SERIES, GOOD_WINDOWS, "nab/data/cat/nope.csv", ["nope.csv", "no such file", "github.com/numenta/NAB"]),
    (GOOD_SERIES, '{"cat/other.csv": []}', "nab/data/cat/s.csv", ["combined_windows.json", "'cat/s.csv'"]),
    ("timestamp,value\n2014-01-01 00:00:00,1\n2014-13-45 00:05:00,2\n", GOOD_WINDOWS, "nab/data/cat/s.csv",
     ["s.csv line 3, column 'timestamp'", "'2014-13-45 00:05:00'"]),
    (GOOD_SERIES, '{"cat/s.csv": [["2014-01-01", "soon"]]}', "nab/data/cat/s.csv",
     ["combined_windows.json 'cat/s.csv' window 1", "'soon'"]),
    ("timestamp,value\n2014-01-01 00:00:00,x\n", GOOD_WINDOWS, "nab/data/cat/s.csv", ["line 2, column 'value'"]),
    ("time,value\n2014-01-01 00:00:00,1\n", GOOD_WINDOWS, "nab/data/cat/s.csv", ["column 'timestamp' is missing"]),
    (GOOD_SERIES, "{not json", "nab/data/cat/s.csv", ["combined_windows.json: not readable JSON"]),
])
def test_nab_bad_inputs_are_one_line_errors(tmp_path, series, windows, path, expect):
    with pytest.raises(DataError) as info:
        load_dataset("nab", _nab_tree(tmp_path, series, windows), path)
    assert "\n" not in str(info.value)
    for part in expect:
        assert part in str(info.value)


def test_nab_series_outside_a_nab_folder(tmp_path):
    (tmp_path / "s.csv").write_text(GOOD_SERIES)
    with pytest.raises(DataError, match="not under a NAB folder"):
        load_dataset("nab", tmp_path, "s.csv")


def test_nsl_kdd_headerless(shared_data):
    d = load_dataset("nsl_kdd", shared_data, "nsl_kdd/KDDTrain+_20Percent.txt.gz")
    assert len(d.classes) == 25192 and set(d.classes) == {"normal", "attack"}
    assert "src_bytes" in d.features.columns and "protocol_type_tcp" in d.features.columns
    assert {c: len(v) for c, v in d.categories.items()} == {"protocol_type": 3, "service": 66, "flag": 11}
    attacks = load_dataset("nsl_kdd", shared_data, "nsl_kdd/KDDTrain+_20Percent.txt.gz", target="attack")
    assert "neptune" in set(attacks.classes)


def test_generic_csv(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,t,y\n1,2,10,0\n3,,11,1\n5,6,12,0\n")
    d = load_dataset("csv", tmp_path, "d.csv", label="y", time_column="t")
    assert list(d.features.columns) == ["a", "b"] and d.normal_class == "0"
    assert np.isnan(d.features["b"][1]) and d.time.tolist() == [10, 11, 12]


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return name


@pytest.mark.parametrize("case, expect", [
    ("missing", ["nope.csv", "no such file", "your own CSV"]),
    ("empty", ["empty.csv", "empty file"]),
    ("header_only", ["header.csv", "no data rows"]),
    ("no_label", ["nolabel.csv", "label column 'y' is missing", "a, b"]),
    ("non_numeric", ["bad.csv line 4, column 'b'", "'abc' is not a number"]),
    ("all_nan", ["nan.csv", "column 'b' is empty in every row"]),
])
def test_bad_inputs_are_one_line_errors_naming_file_line_and_column(tmp_path, case, expect):
    files = {"missing": "nope.csv",
             "empty": _write(tmp_path, "empty.csv", ""),
             "header_only": _write(tmp_path, "header.csv", "a,b,y\n"),
             "no_label": _write(tmp_path, "nolabel.csv", "a,b\n1,2\n"),
             "non_numeric": _write(tmp_path, "bad.csv", "a,b,y\n1,2,0\n3,4,1\n5,abc,0\n"),
             "all_nan": _write(tmp_path, "nan.csv", "a,b,y\n1,,0\n2,,1\n")}
    with pytest.raises(DataError) as info:
        load_dataset("csv", tmp_path, files[case], label="y")
    message = str(info.value)
    assert "\n" not in message
    for part in expect:
        assert part in message


def test_missing_public_data_names_its_source(tmp_path):
    with pytest.raises(DataError, match="10.17632/jxpfjc64kr.1"):
        load_dataset("sdn_ddos", tmp_path, "sdn_ddos/dataset_sdn.csv.gz")
    with pytest.raises(DataError, match="N_BaIoT"):
        load_dataset("nbaiot", tmp_path, ["n_baiot/benign_traffic.csv"])


def test_gzip_non_numeric_cell_in_sdn_layout(tmp_path):
    path = tmp_path / "sdn.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("dt,switch,src,dst,pktcount,Protocol,label\n1,1,a,b,5,UDP,0\n2,1,a,b,x7,TCP,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'pktcount': 'x7'"):
        load_dataset("sdn_ddos", tmp_path, "sdn.csv.gz")


def test_unknown_loader_and_a_csv_without_label(tmp_path):
    with pytest.raises(DataError, match="known: sdn_ddos"):
        load_dataset("parquet", tmp_path, "x")
    unlabelled = load_dataset("csv", tmp_path, _write(tmp_path, "x.csv", "a,b\n1,2\n3,4\n"))
    assert unlabelled.classes.tolist() == ["unlabelled", "unlabelled"] and unlabelled.normal_class == "unlabelled"
    assert list(unlabelled.features.columns) == ["a", "b"]


def test_resolve_data_root(tmp_path, monkeypatch):
    assert resolve_data_root(tmp_path) == tmp_path
    monkeypatch.setenv("TINYAD_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path
    monkeypatch.delenv("TINYAD_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="--data-root"):
        resolve_data_root(search_defaults=False)
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_root(tmp_path / "nope")


def test_nsl_kdd_rows_must_be_as_wide_as_the_first(tmp_path):
    row = ",".join(["0", "tcp", "http", "SF"] + ["1"] * 37 + ["normal", "20"])
    (tmp_path / "kdd.txt").write_text(row + "\n" + row + "\n" + row.rsplit(",", 1)[0] + "\n")
    with pytest.raises(DataError) as info:
        load_dataset("nsl_kdd", tmp_path, "kdd.txt")
    assert str(info.value) == (f"{tmp_path / 'kdd.txt'} line 3, column '43': missing; the row has 42 cells, "
                               "the first row 43")
    (tmp_path / "kdd.txt").write_text(row + "\n" + row.replace(",http,", ",gopher,") + "\n")
    d = load_dataset("nsl_kdd", tmp_path, "kdd.txt")
    assert d.categories["service"] == ("gopher", "http") and d.features["service_http"].tolist() == [1.0, 0.0]

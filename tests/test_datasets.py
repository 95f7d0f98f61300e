"""Loaders on the real data sets, and every bad input a user can hand them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from firmware_host.errors import DataError
from toolchain.datasets import load_dataset, resolve_data_root

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


def test_nsl_kdd_headerless(shared_data):
    d = load_dataset("nsl_kdd", shared_data, "nsl_kdd/KDDTrain+_20Percent.txt.gz")
    assert len(d.classes) == 25192 and set(d.classes) == {"normal", "attack"}
    assert "src_bytes" in d.features.columns and "protocol_type_tcp" in d.features.columns
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


def test_unknown_loader_and_missing_label_for_csv(tmp_path):
    with pytest.raises(DataError, match="known: sdn_ddos"):
        load_dataset("parquet", tmp_path, "x")
    with pytest.raises(DataError, match="needs the label column"):
        load_dataset("csv", tmp_path, _write(tmp_path, "x.csv", "a\n1\n"))


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

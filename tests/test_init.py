"""`tinyad init`: a starter recipe from each real data set, that loads, names the expected
detector, split and excluded columns, and (two of them, marked slow) builds for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from toolchain.recipe import load_recipe

NAB_SERIES = "nab/data/realTraffic/speed_7578.csv"


def _init(tmp_path: Path, csv: Path, *flags: str, out: str = "recipe.toml"):
    result = CliRunner().invoke(main, ["init", "--csv", str(csv), "--out", str(tmp_path / out), *flags])
    return result, tmp_path / out


def _written(tmp_path: Path, csv: Path, *flags: str):
    result, out = _init(tmp_path, csv, *flags)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return load_recipe(out), out.read_text()


def test_sdn_ddos_supervised_random_split(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / "sdn_ddos/dataset_sdn.csv.gz", "--label", "label")
    assert (recipe.data.loader, recipe.detector.kind, recipe.split.method) == ("csv", "vae_dnn", "random")
    assert recipe.data.label == "label" and recipe.data.time_column is None
    assert recipe.data.exclude == ["src", "dst", "Protocol"]
    assert "src: excluded, IP or MAC addresses" in text
    assert "Protocol: excluded, a category (ICMP, TCP, UDP)" in text
    assert "pktcount: kept, numbers" in text
    assert "# Detector: vae_dnn, because a label ('label') exists" in text


def test_ton_iot_time_split_and_label_leak(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / "ton_iot/Train_Test_IoT_Weather.csv.gz", "--label", "label")
    assert (recipe.detector.kind, recipe.split.method) == ("vae_dnn", "time")
    assert recipe.data.time_column == "date"
    # 'time' is the clock half of date+time; 'type' names the attack, so it restates the label.
    assert recipe.data.exclude == ["time", "type"]
    assert "type: excluded, each of its values" in text and "it restates the label" in text
    assert "# Split: rows have a time ('date')" in text


def test_ton_iot_time_flag_overrides_the_guess(tmp_path, shared_data):
    recipe, _ = _written(tmp_path, shared_data / "ton_iot/Train_Test_IoT_Weather.csv.gz",
                         "--label", "label", "--time", "time")
    assert recipe.data.time_column == "time" and "date" in recipe.data.exclude


def test_n_baiot_without_label_is_an_autoencoder(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / "n_baiot/benign_traffic.csv")
    assert (recipe.data.loader, recipe.detector.kind, recipe.split.method) == ("nbaiot", "ae", "random")
    assert recipe.threshold.method == "percentile" and recipe.data.exclude == []
    assert "because no label" in text


def test_nab_series_is_temporal_label_free(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / NAB_SERIES)
    assert (recipe.data.loader, recipe.detector.kind, recipe.split.method) == ("nab", "lstm", "probation")
    assert recipe.adaptive.enabled and recipe.verify.gate == "windows" and recipe.split.test == 0
    assert "timestamp: time, the time of each row" in text
    assert (tmp_path / recipe.data.path).resolve() == (shared_data / NAB_SERIES).resolve()


def test_nsl_kdd_has_no_header_and_is_read_by_its_loader(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / "nsl_kdd/KDDTest+.txt.gz")
    assert (recipe.data.loader, recipe.detector.kind, recipe.threshold.method) == ("nsl_kdd", "vae_dnn", "f1")
    assert "protocol_type: kept, a category (icmp, tcp, udp), one-hot encoded by the nsl_kdd loader" in text
    assert "attack: label, the nsl_kdd loader reads it" in text and "difficulty: excluded" in text
    assert "protocol_type" not in recipe.data.exclude and "difficulty" not in recipe.data.exclude


def test_a_headerless_csv_of_no_known_set_is_refused(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("".join(f"{i},{i * 2}.5,1\n" for i in range(30)))
    result, out = _init(tmp_path, path)
    _one_line_error(result, "the first row looks like data (cell 1 is '0'), not a header")
    assert not out.exists()


def test_label_free_csv_is_an_autoencoder_on_every_row(tmp_path, shared_data):
    """No --label and no known data set: the generic loader takes every row as normal."""
    recipe, text = _written(tmp_path, shared_data / "n_baiot/scan.csv")
    assert (recipe.data.loader, recipe.detector.kind, recipe.split.method) == ("csv", "ae", "random")
    assert recipe.data.label is None and recipe.threshold.method == "percentile"
    assert "figures that need labels (F1, ROC AUC) read n/a" in text


def test_without_label_a_label_named_column_is_left_out(tmp_path, shared_data):
    recipe, text = _written(tmp_path, shared_data / "sdn_ddos/dataset_sdn.csv.gz")
    assert (recipe.data.loader, recipe.detector.kind, recipe.data.label) == ("csv", "ae", None)
    assert "label" in recipe.data.exclude
    assert "label: excluded, named like a label: left out so the model does not learn the answer; pass " \
           "--label label to train on it" in text


def _data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith((".csv", ".csv.gz", ".txt.gz")))


def test_init_writes_a_loadable_recipe_for_every_shared_data_file(tmp_path, shared_data):
    """Every file of every data set under ../shared/data, without --label: a recipe that loads."""
    files = _data_files(shared_data)
    assert len({f.relative_to(shared_data).parts[0] for f in files}) == 5      # sdn, n_baiot, ton_iot, nsl_kdd, nab
    for i, path in enumerate(files):
        result, out = _init(tmp_path, path, out=f"recipe{i}.toml")
        assert result.exit_code == 0, f"{path}: {result.output}"
        recipe = load_recipe(out)
        assert (tmp_path / recipe.data.path if isinstance(recipe.data.path, str) else
                tmp_path / recipe.data.path[0]).resolve() == path.resolve()


def _one_line_error(result, text: str) -> None:
    assert result.exit_code != 0
    assert result.output.count("\n") == 1 and result.output.startswith("Error: "), result.output
    assert text in result.output
    assert "Traceback" not in result.output


def _small_csv(tmp_path: Path) -> Path:
    rows = ["id,host,temp,door,label"] + [f"{i},10.0.0.{i % 7},{20 + i % 5}.5,{'yes' if i % 3 else 'no'},"
                                         f"{int(i % 9 == 0)}" for i in range(1, 41)]
    path = tmp_path / "own.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_own_csv_ids_addresses_booleans(tmp_path):
    recipe, text = _written(tmp_path, _small_csv(tmp_path), "--label", "label")
    assert recipe.data.exclude == ["id", "host"]
    assert "id: excluded, an integer that rises by row" in text
    assert "door: kept, yes/no values" in text
    assert recipe.data.path == "own.csv"


def test_user_mistakes_are_one_line_errors(tmp_path, shared_data):
    own = _small_csv(tmp_path)
    _one_line_error(_init(tmp_path, tmp_path / "missing.csv")[0], "missing.csv: no such file")
    (tmp_path / "empty.csv").write_text("")
    _one_line_error(_init(tmp_path, tmp_path / "empty.csv")[0], "empty.csv: empty file")
    _one_line_error(_init(tmp_path, own, "--label", "nope")[0], "--label 'nope' is not a column; columns are: id,")
    _one_line_error(_init(tmp_path, own, "--label", "label", "--time", "when")[0], "--time 'when' is not a column")
    (tmp_path / "recipe.toml").write_text("keep me\n")
    _one_line_error(_init(tmp_path, own, "--label", "label")[0], "recipe.toml: already exists; pass --force")
    assert (tmp_path / "recipe.toml").read_text() == "keep me\n"
    result, out = _init(tmp_path, own, "--label", "label", "--force")
    assert result.exit_code == 0 and load_recipe(out).detector.kind == "vae_dnn"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".recipe.toml")] == []   # no temp left


def test_help_has_an_example():
    result = CliRunner().invoke(main, ["init", "--help"])
    assert result.exit_code == 0 and "tinyad init --csv flows.csv --label is_attack" in result.output


def _shrink(path: Path, **values) -> None:
    """Set top-level-in-section keys such as ``epochs`` in a written recipe (a user's edit)."""
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^#? ?{key} = [^\n]*", f"{key} = {value}", text, flags=re.M)
        assert count >= 1, key
    path.write_text(text)


@pytest.mark.slow
@pytest.mark.parametrize("csv, flags, edits", [
    ("sdn_ddos/dataset_sdn.csv.gz", ["--label", "label"],
     {"max_rows": 3000, "epochs": 4, "classifier_epochs": 4}),
    (NAB_SERIES, [], {"epochs": 3}),
    ("n_baiot/scan.csv", [], {"epochs": 3}),
    ("nsl_kdd/KDDTest+.txt.gz", [], {"max_rows": 2000, "epochs": 2, "classifier_epochs": 2}),
    ("ton_iot/Train_Test_IoT_Modbus.csv.gz", [], {"max_rows": 2000, "epochs": 2}),
], ids=["sdn_ddos_vae_dnn", "nab_lstm", "n_baiot_label_free_ae", "nsl_kdd_vae_dnn", "ton_iot_label_free_ae"])
def test_starter_recipe_builds(tmp_path, shared_data, csv, flags, edits):
    result, out = _init(tmp_path, shared_data / csv, *flags)
    assert result.exit_code == 0, result.output
    _shrink(out, **edits)
    bundle = tmp_path / "bundle"
    built = CliRunner().invoke(main, ["build", str(out), "--out", str(bundle), "--work", str(tmp_path / "work")])
    assert built.exit_code == 0, built.output
    assert (bundle / "manifest.json").is_file() and f"bundle written to {bundle}" in built.output
    if load_recipe(out).data.loader == "csv" and "--label" not in flags:     # label-free
        assert re.search(r"^\s*f1\s+n/a\s+n/a\s+n/a$", built.output, re.M), built.output
        assert "gate f1           pass: skipped: the held-out rows hold no attack row" in built.output
        assert "gate false_alarms pass" in built.output


def test_time_found_by_its_dates_and_ipv6_addresses_excluded(tmp_path):
    rows = ["seen_at,peer,load,label"] + [f"2024-03-0{1 + i // 24} {i % 24:02d}:15:00,fe80::{i % 5 + 1},"
                                          f"{i % 11}.25,{int(i == 30)}" for i in range(48)]
    path = tmp_path / "own.csv"
    path.write_text("\n".join(rows) + "\n")
    recipe, text = _written(tmp_path, path, "--label", "label")
    assert recipe.data.time_column == "seen_at" and recipe.split.method == "probation"
    assert recipe.detector.kind == "lstm" and recipe.data.exclude == ["peer"]
    assert "peer: excluded, IP or MAC addresses" in text


def test_write_recipe_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    from toolchain import starter

    out = tmp_path / "recipe.toml"
    out.write_text("old\n")

    def refuse(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(starter.os, "replace", refuse)
    with pytest.raises(OSError):
        starter.write_recipe("new\n", out, force=True)
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


def test_label_without_a_known_normal_value_names_the_most_common(tmp_path):
    rows = ["size,verdict"] + [f"{i % 13},{'bad' if i % 10 == 0 else 'ok'}" for i in range(50)]
    path = tmp_path / "own.csv"
    path.write_text("\n".join(rows) + "\n")
    recipe, text = _written(tmp_path, path, "--label", "verdict")
    assert recipe.data.normal == "ok" and "no 0/normal/benign value found: check this" in text

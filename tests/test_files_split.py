"""The "files" split: a data set's own test file as the test part (NSL-KDD's KDDTest+), with test
category values the training file lacks scored as all-zero one-hot rows and counted."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from firmware_host.errors import RecipeError
from toolchain.prepare import prepare
from toolchain.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def _kdd_line(i: int, service: str, attack: str) -> str:
    numbers = [str((i * 7 + j) % 11) for j in range(38)]
    return ",".join([numbers[0], "tcp" if i % 2 else "udp", service, "SF", *numbers[1:], attack, "21"])


def _write(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as stream:
        stream.write("\n".join(lines) + "\n")


def _recipe(folder: Path) -> Path:
    train = [_kdd_line(i, ("http", "ftp")[i % 2], ("normal", "neptune")[i % 3 == 0]) for i in range(60)]
    test = [_kdd_line(i, ("http", "ftp", "tftp_u", "http")[i % 4], ("normal", "satan")[i % 2]) for i in range(20)]
    _write(folder / "train.txt.gz", train)
    _write(folder / "test.txt.gz", test)
    path = folder / "files.toml"
    path.write_text('name = "files"\n[data]\nloader = "nsl_kdd"\npath = "train.txt.gz"\nrelative_to = "recipe"\n'
                    '[split]\nmethod = "files"\ntest_path = "test.txt.gz"\ntrain = 0.75\nvalidation = 0.25\n'
                    'test = 0.0\n[detector]\nkind = "vae_dnn"\n')
    return path


def test_files_split_tests_on_every_row_of_the_test_file_and_counts_unseen_values(tmp_path):
    recipe = load_recipe(_recipe(tmp_path))
    prep = prepare(recipe, Path("."))
    assert len(prep.parts["train"]) == 45 and len(prep.parts["validation"]) == 15
    assert np.array_equal(prep.parts["test"], np.arange(60, 80))
    assert not set(prep.parts["train"]) & set(prep.parts["validation"])
    assert prep.split["unseen_categories"] == {"service": {"tftp_u": 5}}
    assert prep.split["test_file"] == "test.txt.gz"
    services = [c for c in prep.dataset.features.columns if c.startswith("service_")]
    assert services == ["service_ftp", "service_http"]      # the training file's values only
    test_services = prep.raw("test", services)
    unseen = np.arange(20) % 4 == 2
    assert (test_services[unseen] == 0).all()
    assert (test_services[~unseen].sum(axis=1) == 1).all()
    # The classes of the test file are its own (an attack kind absent from training included).
    assert set(prep.dataset.classes[prep.parts["test"]]) == {"normal", "attack"}
    assert prep.dataset.categories["service"] == ("ftp", "http")


@pytest.mark.parametrize("split", [{"method": "files", "train": 0.8, "validation": 0.2, "test": 0.0},
                                   {"method": "files", "test_path": "t.csv", "train": 0.6, "validation": 0.2,
                                    "test": 0.2}])
def test_files_split_needs_a_test_path_and_no_test_share(split):
    data = {"name": "x", "data": {"loader": "nsl_kdd", "path": "x"}, "split": split}
    with pytest.raises(RecipeError, match="test_path"):
        parse_recipe(data, Path("x.toml"))


def test_shipped_nsl_kdd_recipe_tests_on_kddtest_plus():
    recipe = load_recipe(ROOT / "models" / "nsl_kdd_vae_dnn.toml")
    assert recipe.split.method == "files" and recipe.split.test_path.endswith("KDDTest+.txt.gz")
    assert recipe.data.path.endswith("KDDTrain+_20Percent.txt.gz")

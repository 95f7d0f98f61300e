"""Distillation from an XGBoost teacher ([train] teacher = "xgboost"): soft targets, mixup rows,
recipe checks, and a real distilled build whose manifest states how often int8 agrees with the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.cli import main
from firmware_host.errors import RecipeError
from firmware_host.manifest import REPORT_FILE, load_manifest
from toolchain import distill
from toolchain.recipe import parse_recipe

from conftest import write_recipe

TEACHER_SECTION = '[train]\nteacher = "xgboost"\nteacher_weight = {weight}\naugment = "mixup"\naugment_rows = 200\n'


def distilled_recipe(folder: Path, name: str = "distilled", weight: str = "[0.5, 1.0]") -> Path:
    """The shared tiny vae_dnn recipe (1,000 rows of the shipped SDN slice, 3 epochs, no k-sweep)
    with a teacher, two teacher weights to choose between on validation, and 200 mixup rows."""
    path = write_recipe(folder, name=name, epochs=3, max_rows=1000, rep_rows=150)
    text = path.read_text().replace("sweep = [4]", "sweep = []")
    path.write_text(text + TEACHER_SECTION.format(weight=weight))
    return path


def test_soft_targets_blend_teacher_probabilities_and_one_hot_labels():
    teacher = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    blended = distill.soft_targets(teacher, labels, 0.25)
    assert np.allclose(blended, [[0.975, 0.025], [0.05, 0.95], [0.15, 0.85]])
    assert np.allclose(blended.sum(axis=1), 1.0)
    assert np.array_equal(distill.soft_targets(teacher, labels, 0.0), [[1, 0], [0, 1], [0, 1]])
    assert np.allclose(distill.soft_targets(teacher, labels, 1.0), teacher)
    three = distill.soft_targets(np.full((2, 3), 1 / 3), np.array([2, 0]), 0.5)
    assert np.allclose(three, [[1 / 6, 1 / 6, 4 / 6], [4 / 6, 1 / 6, 1 / 6]])
    with pytest.raises(RecipeError, match="teacher_weight"):
        distill.soft_targets(teacher, labels, 1.5)


def test_mixup_rows_lie_between_two_training_rows_and_repeat_with_the_seed():
    x = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, -4.0]])
    rows = distill.mixup_rows(x, 50, seed=1)
    assert rows.shape == (50, 2)
    assert np.array_equal(rows, distill.mixup_rows(x, 50, seed=1))
    assert not np.array_equal(rows, distill.mixup_rows(x, 50, seed=2))
    assert (rows >= x.min(axis=0)).all() and (rows <= x.max(axis=0)).all()
    # every new row is lam * a + (1 - lam) * b for some pair of rows: on one of the three segments
    on_segment = []
    for row in rows:
        found = False
        for a in range(3):
            for b in range(3):
                d = x[a] - x[b]
                lam = np.dot(row - x[b], d) / max(np.dot(d, d), 1e-12)
                found |= bool(np.allclose(lam * x[a] + (1 - lam) * x[b], row) and -1e-9 <= lam <= 1 + 1e-9)
        on_segment.append(found)
    assert all(on_segment)
    assert distill.mixup_rows(x, 0, seed=1).shape == (0, 2)


def test_candidates_are_every_listed_weight_and_row_count():
    assert distill.candidates(0.5, 0) == [(0.5, 0)]
    assert distill.candidates([0.0, 1.0], [0, 100]) == [(0.0, 0), (0.0, 100), (1.0, 0), (1.0, 100)]


@pytest.mark.parametrize("sections, message", [
    ({"detector": {"kind": "ae"}, "train": {"teacher": "xgboost"}}, "needs \\[detector\\] kind"),
    ({"train": {"augment": "mixup", "augment_rows": 10}}, "set teacher"),
    ({"train": {"teacher": "xgboost", "augment_rows": 10}}, "needs augment"),
    ({"train": {"teacher": "xgboost", "teacher_weight": [0.5, 2]}}, "teacher_weight"),
    ({"train": {"teacher": "forest"}}, "choose one of none, xgboost"),
])
def test_recipe_refuses_a_teacher_it_cannot_use(sections, message):
    data = {"name": "x", "data": {"loader": "csv", "path": "x.csv", "label": "y"}, "detector": {"kind": "vae_dnn"}}
    data.update(sections)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(data, Path("x.toml"))


@pytest.mark.slow
def test_distilled_build_reports_int8_agreement_with_its_teacher(tmp_path):
    from firmware_host.runner import Detector
    from toolchain.prepare import prepare
    from toolchain.recipe import load_recipe

    recipe_path = distilled_recipe(tmp_path)
    out, work = tmp_path / "bundle", tmp_path / "work"
    result = CliRunner().invoke(main, ["build", str(recipe_path), "--out", str(out), "--work", str(work)])
    assert result.exit_code == 0, result.output
    assert "distilled from xgboost" in result.output
    manifest = load_manifest(out)
    teacher = manifest.metrics["teacher"]
    report = json.loads((out / REPORT_FILE).read_text())
    chosen = report["train"]["distillation"]
    assert [t["teacher_weight"] for t in chosen["tried"]] == [0.5, 1.0]
    assert chosen["teacher_weight"] in (0.5, 1.0) and chosen["augment_rows"] == 200
    # Recompute the agreement from scratch: the teacher saved beside the model, the bundle's
    # int8 model through the device's runner, on the test rows of the same split.
    recipe = load_recipe(recipe_path)
    prep = prepare(recipe, Path("."))
    model = distill.load_teacher(work, 2)
    with Detector(out) as detector:
        int8 = detector.predict(prep.raw("test", manifest.features)).is_anomaly
    teacher_flags = distill.teacher_verdicts(model, _scaled(prep, manifest), teacher["threshold"])
    assert teacher["rows"] == len(int8)
    assert teacher["int8_agreement"] == pytest.approx(distill.agreement(int8, teacher_flags))
    assert 0.5 < teacher["int8_agreement"] <= 1.0
    info = CliRunner().invoke(main, ["info", str(out)])
    assert f"{100 * teacher['int8_agreement']:.2f} %" in info.output


def _scaled(prep, manifest) -> np.ndarray:
    from firmware_host.preprocess import scale_rows

    return scale_rows(prep.raw("test", manifest.features), manifest.scaler)

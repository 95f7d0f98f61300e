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
from firmware_host.preprocess import scale_rows
from toolchain import distill
from toolchain.recipe import parse_recipe


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


def test_distilled_build_reports_int8_agreement_with_its_teacher(distilled_builds):
    from firmware_host.runner import Detector
    from toolchain.prepare import prepare
    from toolchain.recipe import load_recipe

    recipe_path, out, work = distilled_builds[0]
    assert load_recipe(recipe_path).data.loader == "csv"        # distillation from a user's own CSV
    manifest = load_manifest(out)
    teacher = manifest.metrics["teacher"]
    report = json.loads((out / REPORT_FILE).read_text())
    chosen = report["train"]["distillation"]
    assert [t["teacher_weight"] for t in chosen["tried"]] == [0.5, 1.0]
    best = max(chosen["tried"], key=lambda t: t["validation_f1"])["validation_f1"]
    assert chosen["teacher_weight"] in (0.5, 1.0) and chosen["validation_f1"] == best
    assert chosen["augment_rows"] == 200
    # Recompute the agreement from scratch: the teacher saved beside the model, the bundle's
    # int8 model through the device's runner, on the test rows of the same split.
    prep = prepare(load_recipe(recipe_path), Path("."))
    rows = prep.raw("test", manifest.features)
    with Detector(out) as detector:
        int8 = detector.predict(rows).is_anomaly
    teacher_flags = distill.teacher_verdicts(distill.load_teacher(work, 2), scale_rows(rows, manifest.scaler),
                                             teacher["threshold"])
    assert teacher["rows"] == len(int8) == len(prep.parts["test"])
    assert teacher["int8_agreement"] == pytest.approx(distill.agreement(int8, teacher_flags))
    assert 0.5 < teacher["int8_agreement"] <= 1.0
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and f"{100 * teacher['int8_agreement']:.2f} %" in info.output


def test_build_teacher_flag_on_an_autoencoder_is_a_one_line_error(tmp_path):
    from conftest import write_recipe

    recipe = write_recipe(tmp_path, name="ae_teacher", kind="ae")
    result = CliRunner().invoke(main, ["build", str(recipe), "--teacher", "xgboost", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "distils into a classifier" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()

"""Same recipe, same seed, same figures: a tiny distilled recipe built twice gives equal manifest
metrics and a byte-identical int8 model (benchmarks/reproducibility.py does the same for any recipe,
each build in a fresh process)."""

from __future__ import annotations

import json

from firmware_host.manifest import MODEL_FILE, load_manifest, sha256_file


def test_a_recipe_built_twice_gives_the_same_metrics_and_model(distilled_builds):
    first, second = (load_manifest(bundle) for _, bundle, _ in distilled_builds)
    assert first.metrics["teacher"]["int8_agreement"] > 0      # the teacher's figures are compared too
    assert json.dumps(first.metrics, sort_keys=True) == json.dumps(second.metrics, sort_keys=True)
    assert first.sha256 == second.sha256 == sha256_file(distilled_builds[1][1] / MODEL_FILE)
    assert first.threshold == second.threshold and first.scaler == second.scaler
    reports = [json.loads((bundle / "report.json").read_text()) for _, bundle, _ in distilled_builds]
    assert reports[0]["train"]["distillation"] == reports[1]["train"]["distillation"]

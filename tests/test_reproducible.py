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


def test_orphan_buffers_of_a_fused_lstm_model_are_zeroed(temporal_bundles):
    """TF 2.21 leaves buffers no tensor uses in a fused-LSTM int8 model, filled with whatever the
    process converted before (a cnn_lstm_attn recipe built after an lstm one in the same process
    got other bytes, and another hash). `convert` zeroes them: filling them with other bytes
    changes no output, and zeroing gives back the shipped file."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    from firmware_host.interpreter import load_runtime
    from toolchain.convert import unused_buffers, unused_buffers_zeroed

    shipped = (temporal_bundles["cnn_lstm_attn"][1] / MODEL_FILE).read_bytes()
    data = bytearray(shipped)
    model = schema.Model.GetRootAsModel(data, 0)
    orphans = unused_buffers(model)
    assert orphans, "no orphan buffer in this model: the converter changed, re-check the fix"
    for k in orphans:
        assert not model.Buffers(k).DataAsNumpy().any()             # shipped zeroed
        model.Buffers(k).DataAsNumpy()[:] = 0x7F                     # what one process left there
    assert bytes(data) != shipped and unused_buffers_zeroed(bytes(data)) == shipped
    runtime = load_runtime()
    outputs = []
    for content in (shipped, bytes(data)):
        interpreter = runtime.open(model_content=content, kernels="builtin")
        interpreter.allocate_tensors()
        given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        rng = np.random.default_rng(0)
        rows = []
        for _ in range(50):
            interpreter.set_tensor(given["index"], rng.integers(-128, 128, given["shape"]).astype(given["dtype"]))
            interpreter.invoke()
            rows.append(interpreter.get_tensor(taken["index"]).copy())
        outputs.append(np.stack(rows))
    assert np.array_equal(*outputs)

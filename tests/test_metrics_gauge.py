"""`tinyad device --metrics-port` when the agent serves nothing: the real agent on a pty, its bundle
failing the golden-vector self-test (no previous bundle to fall back on), a real HTTP scrape."""

from __future__ import annotations

import shutil

from fault_relay import Relay
from test_link import _break_self_test
from test_metrics_port import _free_port, metered_agent, scrape


def test_the_self_test_gauge_is_0_when_the_agent_serves_nothing(built_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(built_bundle, bundle)
    _break_self_test(bundle)
    port = _free_port()
    with Relay() as relay, metered_agent(relay.device_port, bundle, port, tmp_path) as (_, log_path):
        metrics = scrape(port)
        log = log_path.read_text()
    assert f"NOT serving {bundle}" in log and "self-test failed" in log, log
    assert metrics["tinyad_self_test_passed"] == 0 and metrics["tinyad_samples_total"] == 0

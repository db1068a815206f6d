"""deploy/monitoring: alert rules promtool accepts and tests, and a ServiceMonitor valid for the operator's CRD."""

from __future__ import annotations

from pathlib import Path

import yaml

from .processes import clean_env, run

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
VALIDATE = ROOT / "tools" / "validate-crds.mjs"


def test_promtool_accepts_the_rules() -> None:
    result = run(["promtool", "check", "rules", "rules.yaml"], clean_env(), 60, MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_promtool_unit_tests_fire_every_alert() -> None:
    result = run(["promtool", "test", "rules", "rules.test.yaml"], clean_env(), 60, MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
        for rule in group["rules"]
    }
    tested = (MONITORING / "rules.test.yaml").read_text()
    assert all(f"alertname: {alert}" in tested for alert in alerts)


def test_servicemonitor_matches_the_operator_schema() -> None:
    result = run(["node", str(VALIDATE), str(MONITORING / "servicemonitor.yaml")], clean_env(), 60)
    assert (result.returncode, result.stdout) == (0, "1 ServiceMonitor(s) valid\n"), result.stderr


def test_schema_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((MONITORING / "servicemonitor.yaml").read_text().replace("interval: 15s", "interval: fifteen"))
    result = run(["node", str(VALIDATE), str(broken)], clean_env(), 60)
    assert result.returncode == 1
    assert "interval must match pattern" in result.stderr


def test_servicemonitor_selects_the_rendered_service_and_its_metrics_port() -> None:
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    rendered = run(["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "base")], clean_env(), 60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "hello"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}

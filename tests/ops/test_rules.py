"""The alert and recording rules: promtool checks them and runs their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/fraudscale/files/prometheus/rules.yml"
UNIT_TESTS = Path(__file__).with_name("rules.test.yml")
PROMTOOL = ROOT / ".tools/bin/promtool"

pytestmark = pytest.mark.skipif(
    not PROMTOOL.exists(), reason="promtool is built by `make prometheus` (make test does it)"
)


def promtool(*args: str) -> str:
    done = subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts() -> list[dict]:  # type: ignore[type-arg]
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


def test_the_rules_unit_tests_pass(tmp_path: Path) -> None:
    """The unit tests judge what fires and when (expressions, `for`, labels); the runbook
    prose is left out of the copy they run on, so a reworded runbook needs no test edit."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(document))
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [f"rules/{RULES.name}"]
    (tmp_path / UNIT_TESTS.name).write_text(yaml.safe_dump(tests))
    promtool("test", "rules", str(tmp_path / UNIT_TESTS.name))


def test_every_alert_is_tested_and_says_how_urgent_it_is_and_what_to_do() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    for rule in alerts():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["runbook"].split()) >= 12, rule["alert"]
    untested = {rule["alert"] for rule in alerts()} - tested - {"FraudscaleTargetDown"}
    assert not untested  # FraudscaleTargetDown: the Prometheus test stops a target


def test_make_rules_runs_the_same_checks() -> None:
    assert shutil.which("make")
    makefile = (ROOT / "Makefile").read_text()
    assert "promtool check rules helm/fraudscale/files/prometheus/rules.yml" in makefile

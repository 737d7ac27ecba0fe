"""The code location loads, and its asset graph is the one the UI shows (snapshot)."""

import json
from pathlib import Path

import dagster as dg
import pytest

from fraud_assets.definitions import build_definitions
from fraud_assets.settings import AssetSettings

pytestmark = pytest.mark.unit

SNAPSHOT = Path(__file__).with_name("asset_graph.json")
defs = build_definitions(AssetSettings())


def graph_snapshot() -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "group": node.group_name,
        }
    checks = sorted(c.to_user_string() for c in graph.asset_check_keys)
    return {"assets": assets, "checks": checks}


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_matches_the_snapshot() -> None:
    # Regenerate after a deliberate change: python -m tests.fraud_assets.test_definitions
    assert graph_snapshot() == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_description_for_the_ui() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description
        assert description, key
        assert "\n" not in description.strip(), f"{key}: the UI shows the first line only"


def test_schedules_and_sensor_target_the_right_jobs() -> None:
    schedule = defs.resolve_schedule_def("nightly_scoring_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "nightly_scoring_job"
    assert defs.resolve_schedule_def("weekly_retraining_schedule").job_name == "retraining_job"
    assert defs.resolve_sensor_def("new_labelled_days_sensor").job_name == "retraining_job"


def test_blocking_checks_guard_publishing() -> None:
    graph = defs.resolve_asset_graph()
    blocking = sorted(
        c.to_user_string() for c in graph.asset_check_keys if graph.get_check_spec(c).blocking
    )
    assert blocking == [
        "fraud_model:fraud_model_quality",
        "onnx_model:onnx_matches_native",
        "onnx_model:onnx_single_row_latency",
    ]


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(graph_snapshot(), indent=2) + "\n")

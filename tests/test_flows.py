"""The Prefect `pipeline` flow runs the DVC stages as tasks, under Prefect's test harness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _load_flow():
    spec = importlib.util.spec_from_file_location("motops_flows_pipeline", ROOT / "flows" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_every_stage_in_order_then_skips_them(project, harness):
    flows = _load_flow()
    order = flows.stage_order(project)
    assert order[:3] == ["synthesize", "ingest", "validate"]
    for before, after in (("validate", "prepare"), ("prepare", "train_detector"), ("train_reid", "export"),
                          ("export", "evaluate"), ("evaluate", "gate"), ("gate", "register")):
        assert order.index(before) < order.index(after)

    data_stages = ["synthesize", "ingest", "validate"]
    first = flows.pipeline(repo_dir=str(project), stages=data_stages)
    assert first == {"synthesize": True, "ingest": True, "validate": True}
    assert (project / "reports/validation/summary.json").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"synthesize", "ingest", "validate"}

    again = flows.pipeline(repo_dir=str(project), stages=data_stages)
    assert again == {"synthesize": False, "ingest": False, "validate": False}


def test_flow_fails_at_validate_on_bad_data_and_records_nothing(project, harness):
    from prefect.states import State

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["orchestration"]["retries"] = 0
    params["validation"]["classes"] = [2]  # the synthetic pedestrians (class 1) become an unknown class
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    flows = _load_flow()
    state = flows.pipeline(repo_dir=str(project), stages=["synthesize", "ingest", "validate"], return_state=True)
    assert isinstance(state, State) and state.is_failed()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "validate" not in lock["stages"]  # ingest ran; nothing after the failed check was recorded


def test_deployments_serve_retrain_on_the_cron_schedule_and_refuse_a_bad_one():
    from motops.errors import ConfigError
    from motops.orchestration import build_deployments

    deployments = {d.name: d for d in build_deployments(ROOT, cron="0 3 * * 1")}
    assert set(deployments) == {"retrain", "promote", "publish", "pipeline", "resign"}
    crons = [s.schedule.cron for s in deployments["retrain"].schedules]
    assert crons == ["0 3 * * 1"]
    intervals = [s.schedule.interval.total_seconds() for s in deployments["resign"].schedules]
    assert intervals == [3600.0]  # fleet.resign_interval_s: the TUF timestamp never expires on a healthy channel
    assert not deployments["promote"].schedules and deployments["publish"].parameters == {"repo_dir": str(ROOT)}
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert {d["name"] for d in prefect_yaml["deployments"]} == set(deployments)
    for entry in prefect_yaml["deployments"]:
        assert (ROOT / entry["entrypoint"].split(":")[0]).is_file()
    with pytest.raises(ConfigError, match="not a cron expression"):
        build_deployments(ROOT, cron="every monday")

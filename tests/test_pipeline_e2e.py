"""The user journey of the README on tiny synthetic footage, end to end, with real local services.

``dvc repro`` (prepare -> train -> export -> evaluate -> gate -> register) registers a challenger
in the project's embedded MLflow store; ``motops promote`` makes it champion; ``motops publish``
ships it to an S3 endpoint (moto's server on 127.0.0.1) where a running edge agent installs it;
new footage dropped in the inbox is picked up by the Prefect ``retrain`` flow (under Prefect's
test harness), versioned with DVC and trained on; the new champion is published and the agent
switches; then the registry and the device roll back.

Training is shortened by params (one detector epoch at a small size, a few ReID steps), the
detector and the ReID are finetuned from tiny local checkpoints standing in for ``models/base/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import save_tiny_base_reid, tiny_yolo

pytestmark = pytest.mark.slow

#: Shortened training, small models, for every stage after validate.
SHORT = {
    ("data", "synthetic", "frames"): 40,
    ("data", "synthetic", "people"): [6, 6],
    ("prepare", "clip_length"): 4,
    ("prepare", "clip_stride"): 10,
    ("detector", "imgsz"): 128,
    ("detector", "epochs"): 1,
    ("detector", "batch"): 4,
    ("detector", "warmup_epochs"): 0,
    ("reid", "max_steps"): 15,
    ("reid", "p_ids"): 2,
    ("reid", "k_instances"): 2,
    ("reid", "embedding_dim"): 64,
    ("export", "calibration_samples", ): 16,
    # an untrained tiny detector boxes nothing real, so the parity check compares few boxes
    ("export", "parity_iou"): 0.9,
    ("evaluate", "sweep_thresholds"): [0.3, 0.5],
    ("evaluate", "max_frames"): 20,
    ("evaluate", "fps_warmup_frames"): 1,
    ("gates", "idf1_min"): 0.0,
    ("gates", "fps_min"): {"onnxruntime": 0.1, "openvino": 0.1, "tensorrt": 0.1, "torch": 0.1},
    # tiny, barely trained models: any regression against the champion is noise here
    ("gates", "max_regression"): 1.0,
    ("gates", "fps_frames"): 10,
    ("gates", "fps_rounds"): 1,
    ("orchestration", "retries"): 0,
}
ROOT = Path(__file__).resolve().parents[1]
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _short_params(project, extra=None) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for keys, value in {**SHORT, **(extra or {})}.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def pipeline_project(project, sh, tmp_path):
    base = project / "models" / "base"
    base.mkdir(parents=True)
    shutil.copy2(tiny_yolo(tmp_path, 128), base / "detector.pt")
    shutil.copy2(base / "detector.pt", base / "detector_v4.pt")  # the frozen pretrain stage's start, committed
    save_tiny_base_reid(base / "reid.pt")
    # the frozen pretrain stages' outputs, as a clone has them (committed); here tiny stand-ins
    (project / "metrics").mkdir()
    (project / "metrics/pretrain.json").write_text(json.dumps({"stand_in": "tests/helpers.tiny_yolo"}))
    (project / "metrics/pretrain_reid.json").write_text(json.dumps({"stand_in": "tests/helpers.save_tiny_base_reid"}))
    _short_params(project)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "short params, base checkpoint"], project)
    return project


@pytest.fixture()
def s3_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("MOTOPS_FLEET_ENDPOINT_URL", f"http://{host}:{port}")
    yield f"http://{host}:{port}"
    server.stop()


def _motops(sh, project, *args, check=True):
    return sh([sys.executable, "-m", "motops.cli", *args], project, check=check)


def _wait_installed(sh, project, version, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(_motops(sh, project, "edge", "status").stdout)
        if status.get("installed") == version or time.monotonic() > deadline:
            return status
        time.sleep(1.0)


def _retrain_flow():
    spec = importlib.util.spec_from_file_location("motops_flows_retrain", ROOT / "flows" / "retrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.retrain


def test_user_journey(pipeline_project, sh, s3_endpoint, tmp_path, monkeypatch):
    project = pipeline_project
    monkeypatch.setenv("MOTOPS_EDGE_DIR", str(tmp_path / "device"))
    out = sh(["dvc", "repro"], project, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]

    det = json.loads((project / "metrics/detector.json").read_text())
    assert {"map50", "map50_95", "precision", "recall"} <= det.keys()
    assert all(0.0 <= det[k] <= 1.0 for k in ("map50", "map50_95", "precision", "recall"))
    reid = json.loads((project / "metrics/reid.json").read_text())
    assert 0.0 <= reid["rank1"] <= 1.0 and 0.0 <= reid["map"] <= 1.0
    assert (project / "models/detector/best.pt").is_file() and (project / "models/reid/reid.pt").is_file()
    assert (project / "reports/reid_training.png").stat().st_size > 0
    assert (project / "reports/detector_training.png").stat().st_size > 0

    export = json.loads((project / "metrics/export.json").read_text())
    assert export["reid_parity_min_cosine"] >= 0.999
    engine_manifest = json.loads((project / "models/engine/manifest.json").read_text())
    trt = engine_manifest["backends"]["tensorrt"]
    assert trt["built"] or trt["reason"]  # built, or an explicit skip with the reason: never silent
    assert export["tensorrt_built"] == trt["built"]
    assert engine_manifest["extra"]["int8"]["reid"]["mean_cosine"] > 0.9
    sh([sys.executable, "-m", "motops.cli", "bundle", "verify", "models/engine"], project)
    sh([sys.executable, "-m", "motops.cli", "bundle", "verify", "models/release"], project)

    ev = json.loads((project / "metrics/eval.json").read_text())
    for key in ("hota", "mota", "idf1", "idsw", "frag", "fps"):
        assert key in ev
    assert 0.0 <= ev["idf1"] <= 1.0 and 0.0 <= ev["hota"] <= 1.0 and ev["fps"] > 0
    assert ev["sequences"] and all("idf1" in m and "diagnosis" in m for m in ev["sequences"].values())
    assert ev["threshold"] in (0.3, 0.5)
    manifest = json.loads((project / "models/release/manifest.json").read_text())
    assert manifest["metrics"]["tracking"]["idf1"] == ev["idf1"]
    chosen = yaml.safe_load((project / "models/release/tracker.yaml").read_text())
    assert chosen["track_high_thresh"] == ev["threshold"]
    for plot in ("sweep.png", "fps.png"):
        assert (project / "reports/evaluate" / plot).stat().st_size > 0

    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], project).stdout)
    assert "metrics/eval.json" in json.dumps(shown)

    gate = json.loads((project / "metrics/gate.json").read_text())
    assert gate["passed"] is True
    registered = json.loads((project / "metrics/register.json").read_text())
    assert registered["created"] is True and registered["version"]

    # nothing changed: nothing re-runs, nothing new is registered
    again = sh(["dvc", "repro"], project)
    assert "Running stage 'train_detector'" not in again.stdout
    assert json.loads((project / "metrics/register.json").read_text())["version"] == registered["version"]
    report = _motops(sh, project, "report").stdout
    assert "IDF1" in report and "version 1" in report and "mlflow ui" in report

    # promote, publish, and a device installs it
    shown = json.loads(_motops(sh, project, "registry", "show").stdout)
    assert shown["aliases"] == {"challenger": "1"}
    assert shown["versions"][0]["tags"]["motops.git_commit"] != "unknown"
    _motops(sh, project, "promote")
    assert json.loads(_motops(sh, project, "registry", "show").stdout)["aliases"] == {"champion": "1"}
    keys = tmp_path / "keys"
    _motops(sh, project, "edge", "keygen", "--private", str(keys / "signing.pem"), "--public", str(keys / "public.pem"))
    monkeypatch.setenv("MOTOPS_SIGNING_KEY", str(keys / "signing.pem"))
    monkeypatch.setenv("MOTOPS_PUBLIC_KEY", str(keys / "public.pem"))
    published = json.loads(_motops(sh, project, "publish", "--create-bucket").stdout)
    assert published["version"] == "1"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    agent = subprocess.Popen([sys.executable, "-m", "motops.cli", "edge", "run", "--poll-interval", "1"], cwd=project,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = _wait_installed(sh, project, "1")
        assert status["installed"] == "1", status
        tracked = json.loads(_motops(sh, project, "track", "data/sequences/" + sorted(ev["sequences"])[0] + "/img1",
                                     "--engine", str(tmp_path / "device" / "current"), "--max-frames", "3",
                                     "--no-video", "--out", str(tmp_path / "trk")).stdout)
        assert tracked["frames"] == 3

        # new footage in the inbox -> the retrain flow versions it, trains, registers version 2
        _motops(sh, project, "synth", "data/inbox/week-48", "--sequences", "1", "--frames", "40", "--width", "320",
                "--height", "192", "--seed", "48", "--people", "6", "--name-prefix", "cam48")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            result = _retrain_flow()(repo_dir=str(project))
            nothing = _retrain_flow()(repo_dir=str(project))
        assert result["ran"] and [b["name"] for b in result["new_footage"]] == ["week-48"]
        assert result["register"]["created"] and result["register"]["version"] == "2"
        assert (project / "data/raw/week-48.dvc").is_file() and len(result["commits"]) == 2
        assert sh(["git", "status", "--porcelain", "dvc.lock", "params.yaml"], project).stdout == ""
        assert nothing["ran"] is False and "no new footage" in nothing["message"]
        # the gate timed the new engine beside the champion's (version 1) in the same run
        gate = json.loads((project / "metrics" / "gate.json").read_text())
        timed = gate["same_run_fps"]
        assert set(timed["fps"]) == {"challenger", "champion"} and timed["frames"] == 10, timed
        assert "same run" in next(r for r in gate["rules"] if r["rule"] == "fps_regression")["note"]

        # the new champion reaches the device
        _motops(sh, project, "promote")
        assert json.loads(_motops(sh, project, "registry", "show").stdout)["aliases"] == {
            "champion": "2", "previous": "1"}
        assert json.loads(_motops(sh, project, "publish").stdout)["version"] == "2"
        status = _wait_installed(sh, project, "2")
        assert status["installed"] == "2" and status["previous"] == "1", status

        # roll back: the registry, and the device
        _motops(sh, project, "promote", "--rollback")
        assert json.loads(_motops(sh, project, "registry", "show").stdout)["aliases"]["champion"] == "1"
        _motops(sh, project, "edge", "rollback")
        time.sleep(2.5)  # two polls of the running agent: it must stay on the rolled-back version
        assert json.loads(_motops(sh, project, "edge", "status").stdout)["installed"] == "1"
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
    assert agent.returncode == 0, agent.stdout.read()[-3000:] if agent.stdout else ""

"""Fleet distribution against a real S3 endpoint: moto's server mode on 127.0.0.1, started here.

Publish -> sync -> track; tampered files, foreign signatures, replayed pointers refused with
``current`` untouched; the endpoint killed in the middle of a multipart upload and the publish
resumed; rollback and hold; five agents in parallel processes; the TensorRT plan step with a
stand-in builder (this machine has no CUDA).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import pytest
import yaml
from helpers import scene, write_tiny_bundle
from typer.testing import CliRunner

from motops.config import FleetParams
from motops.export.bundle import load_bundle, manifest_digest, verify_bundle
from motops.fleet import (
    EdgeAgent,
    FleetError,
    SignatureError,
    SigningKeyError,
    StaleVersionError,
    VerificationError,
    generate_keypair,
    load_private_key,
    load_public_key,
    publish_bundle,
    read_pointer,
    sign_release,
    verify_release,
    with_env_overrides,
)
from motops.fleet.store import compare_versions, pointer_key, release_key, s3_client

pytestmark = pytest.mark.slow

BUCKET = "fleet-test"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
SCRUBBED = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "MOTOPS_FLEET_ENDPOINT_URL",
    "MOTOPS_FLEET_BUCKET",
    "MOTOPS_FLEET_PREFIX",
    "MOTOPS_FLEET_CHANNEL",
    "MOTOPS_SIGNING_KEY",
    "MOTOPS_PUBLIC_KEY",
    "MOTOPS_EDGE_DIR",
)

# A TCP forwarder run as its own process in front of moto: SIGKILL it and the S3 endpoint is gone
# mid-request (connections reset, new ones refused) while the store keeps its objects, so the test
# can check what a crash left in the bucket. Restarted on the same port, the endpoint is back.
FORWARDER = r"""
import socket, sys, threading
listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
print(server.getsockname()[1], flush=True)

def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

while True:
    conn, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def aws_env():
    with pytest.MonkeyPatch.context() as mp:
        for name in SCRUBBED:
            mp.delenv(name, raising=False)
        for name, value in FAKE_AWS.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def endpoint(aws_env) -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3_client(FleetParams(endpoint_url=url)).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder / "signing.pem", folder / "public.pem")
    other, other_public = generate_keypair(folder / "other.pem", folder / "other_public.pem")
    return {"private": private, "public": public, "other": other, "other_public": other_public}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Bundles of versions 1, 2, 3 (same tiny models, different manifests)."""
    folder = tmp_path_factory.mktemp("bundles")
    return {v: write_tiny_bundle(folder / f"engine-{v}", v, models_dir=folder / "models") for v in ("1", "2", "3")}


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> dict[str, Path]:
    """Bundles of versions 1, 2, 3 whose model files are random bytes (1 MiB detector): intact and
    signed like any other, quick to move, but not loadable -- for agents with ``load_check=False``."""
    import numpy as np

    from motops.export.bundle import write_bundle

    folder = tmp_path_factory.mktemp("light")
    rng = np.random.default_rng(0)
    (folder / "det.onnx").write_bytes(rng.bytes(1 << 20))
    (folder / "reid.onnx").write_bytes(rng.bytes(16 << 10))
    return {
        v: write_bundle(folder / f"engine-{v}", files={"detector": folder / "det.onnx", "reid": folder / "reid.onnx"},
                        tracker={"tracker": "botsort"}, model_version=v, input_shapes={}, class_names={0: "person"},
                        metrics={}, backends={"onnxruntime": {"built": True, "reason": None}})
        for v in ("1", "2", "3")
    }


@pytest.fixture
def params(endpoint, keys) -> FleetParams:
    """Fleet params on a prefix of its own, so tests do not see each other's releases."""
    return FleetParams(
        endpoint_url=endpoint,
        bucket=BUCKET,
        prefix=f"t-{uuid.uuid4().hex[:8]}",
        signing_key=str(keys["private"]),
        public_key=str(keys["public"]),
        keep_versions=2,
        multipart_threshold_mb=5,
        multipart_chunksize_mb=5,
        max_attempts=2,
        timeout_s=10,
    )


@pytest.fixture
def clip(tmp_path) -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i + 1:06d}.jpg"), scene(i))
    return folder


def _agent(tmp_path: Path, params: FleetParams, name: str = "device", load_check: bool = False, **kwargs) -> EdgeAgent:
    """An agent; loading the models before a switch is checked where it matters (it costs ~0.5 s a sync)."""
    return EdgeAgent(tmp_path / name, params, params.public_key, load_check=load_check, **kwargs)


def _current_version(agent: EdgeAgent) -> str:
    return agent.current.resolve(strict=True).name


def _counting_client(params: FleetParams) -> tuple[object, list[tuple[str, str, str | None]]]:
    """An S3 client that records (operation, key, range) of every request it makes."""
    client = s3_client(params)
    calls: list[tuple[str, str, str | None]] = []

    def record(params, model, **_):
        calls.append((model.name, params.get("Key", ""), params.get("Range")))

    client.meta.events.register("provide-client-params.s3.*", record)
    return client, calls


# --------------------------------------------------------------------------- publish + sync


def test_publish_then_sync_installs_and_the_engine_tracks(tmp_path, params, bundles, clip):
    result = publish_bundle(bundles["1"], name="tracker", version="1", params=params)
    assert result["previous"] is None and result["skipped"] == []
    assert set(result["uploaded"]) == {"detector.onnx", "reid.onnx", "tracker.yaml", "manifest.json", "manifest.sig"}
    assert result["manifest_digest"] == manifest_digest(bundles["1"])
    client = s3_client(params)
    head = client.head_object(Bucket=BUCKET, Key=release_key(params, "tracker", "1", "detector.onnx"))
    assert head["Metadata"]["sha256"] == json.loads((bundles["1"] / "manifest.json").read_text())["files"][
        "detector.onnx"]["sha256"]
    pointer = read_pointer(params)
    assert (pointer["name"], pointer["version"], pointer["channel"]) == ("tracker", "1", "stable")
    verify_release(params.public_key, pointer["signature"], pointer["manifest_digest"], name="tracker", version="1")

    agent = _agent(tmp_path, params, load_check=True)
    assert agent.sync() == {"version": "1", "previous": None, "channel_version": "1", "action": "installed"}
    assert agent.current.is_symlink() and os.readlink(agent.current) == os.path.join("versions", "1")
    assert verify_bundle(agent.current).ok
    assert (agent.current / "manifest.sig").read_text().strip() == pointer["signature"]
    status = agent.status()
    assert status["installed"] == "1" and status["channel_version"] == "1" and status["last_error"] is None
    assert status["last_check"] and status["current"] == str((tmp_path / "device" / "versions" / "1").resolve())
    assert status["tensorrt"]["built"] is False and status["tensorrt"]["reason"].startswith("TensorRT: ")
    assert not any((tmp_path / "device" / "staging").iterdir())
    assert agent.sync()["action"] == "up-to-date"

    summary = load_bundle(agent.current).track(clip, out_dir=tmp_path / "run", write_video=False, progress=False)
    assert summary["frames"] == 4 and (tmp_path / "run" / "tracks.txt").is_file()

    from motops.cli import app

    out = CliRunner().invoke(
        app, ["track", str(clip), "--engine", str(agent.current), "--out", str(tmp_path / "cli"), "--no-video"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout[out.stdout.index("{"):])["frames"] == 4


def test_a_file_altered_in_the_bucket_is_refused_and_the_old_engine_stays(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client, calls = _counting_client(params)
    agent = _agent(tmp_path, params, client=client)
    agent.sync()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    reid_key = release_key(params, "tracker", "2", "reid.onnx")
    original = client.get_object(Bucket=BUCKET, Key=reid_key)["Body"].read()
    sha = json.loads((light["2"] / "manifest.json").read_text())["files"]["reid.onnx"]["sha256"]
    tampered = original[:-1] + bytes([original[-1] ^ 0xFF])  # same size, claims the old sha256
    client.put_object(Bucket=BUCKET, Key=reid_key, Body=tampered, Metadata={"sha256": sha})

    with pytest.raises(VerificationError, match="reid.onnx") as info:
        agent.sync()
    assert info.value.files == ["reid.onnx"] and info.value.version == "2"
    assert _current_version(agent) == "1" and verify_bundle(agent.current).ok
    assert verify_bundle(agent.current).manifest["model_version"] == "1"
    status = agent.status()
    assert status["installed"] == "1" and status["channel_version"] == "2" and "reid.onnx" in status["last_error"]

    # Put the right bytes back: the next sync fetches only what was missing (resumable staging).
    client.put_object(Bucket=BUCKET, Key=reid_key, Body=original, Metadata={"sha256": sha})
    calls.clear()
    assert agent.sync()["action"] == "installed"
    fetched = {key.rsplit("/", 1)[-1] for op, key, _ in calls if op == "GetObject"}
    assert fetched == {"stable.json", "manifest.json", "reid.onnx"}
    assert _current_version(agent) == "2" and agent.status()["last_error"] is None


def test_a_partial_download_is_resumed_by_byte_range(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client, calls = _counting_client(params)
    agent = _agent(tmp_path, params, client=client)
    staging = tmp_path / "device" / "staging" / "1"
    staging.mkdir(parents=True)
    head = 256 << 10
    (staging / "detector.onnx.part").write_bytes((light["1"] / "detector.onnx").read_bytes()[:head])
    (staging / "reid.onnx.part").write_bytes(b"not the start of reid.onnx")  # a wrong prefix: fetched again
    (staging / "stray.bin").write_bytes(b"left over")
    assert agent.sync()["action"] == "installed"
    gets = [(key.rsplit("/", 1)[-1], rng) for op, key, rng in calls if op == "GetObject"]
    assert ("detector.onnx", f"bytes={head}-") in gets and ("detector.onnx", None) not in gets
    assert [rng for name, rng in gets if name == "reid.onnx"] == ["bytes=26-", None]
    assert verify_bundle(agent.current).ok and not (agent.current / "stray.bin").exists()


def test_a_manifest_altered_in_the_bucket_is_refused(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client = s3_client(params)
    key = release_key(params, "tracker", "1", "manifest.json")
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["metrics"]["idf1"] = 0.99
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    agent = _agent(tmp_path, params)
    with pytest.raises(VerificationError, match="manifest in the bucket was altered"):
        agent.sync()
    assert not agent.current.exists() and agent.status()["installed"] is None


def test_a_release_whose_models_do_not_load_is_refused(tmp_path, params, bundles):
    from motops.export.bundle import write_bundle

    publish_bundle(bundles["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params, load_check=True)
    agent.sync()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    broken = write_bundle(tmp_path / "broken", files={"detector": junk}, tracker={"tracker": "bytetrack"},
                          model_version="2", input_shapes={}, class_names={0: "person"}, metrics={},
                          backends={"onnxruntime": {"built": True, "reason": None}})
    publish_bundle(broken, name="tracker", version="2", params=params)  # intact and signed, but unusable
    with pytest.raises(VerificationError, match="models do not load here"):
        agent.sync()
    assert _current_version(agent) == "1" and not (tmp_path / "device" / "versions" / "2").exists()


def test_a_release_signed_with_another_key_is_refused(tmp_path, params, light, keys):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    publish_bundle(light["2"], name="tracker", version="2", params=params, signing_key=keys["other"])
    with pytest.raises(VerificationError, match="does not verify with the trusted public key"):
        agent.sync()
    assert _current_version(agent) == "1"
    assert "does not verify" in agent.status()["last_error"]
    assert not (tmp_path / "device" / "staging" / "2").exists()  # refused before any download


def test_an_older_pointer_is_refused_unless_rolling_back(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client = s3_client(params)
    key = pointer_key(params)
    old_pointer = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    agent = _agent(tmp_path, params)
    assert agent.sync()["version"] == "2"

    with pytest.raises(StaleVersionError, match="points at tracker 2; 1 is older than it"):
        publish_bundle(light["1"], name="tracker", version="1", params=params)

    client.put_object(Bucket=BUCKET, Key=key, Body=old_pointer)  # a replayed, genuinely signed, old pointer
    with pytest.raises(StaleVersionError, match="points at tracker 1, older than the installed 2"):
        agent.sync()
    assert _current_version(agent) == "2"

    forged = {**json.loads(old_pointer), "version": "9"}  # the old signature does not cover version 9
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(forged).encode())
    with pytest.raises(VerificationError, match="does not verify"):
        agent.sync()

    client.put_object(Bucket=BUCKET, Key=key, Body=old_pointer)
    result = agent.sync(allow_rollback=True)
    assert result["action"] == "installed" and _current_version(agent) == "1"

    # Version 1 signed again over other content: a device never lets a version change under it.
    other = manifest_digest(light["3"])
    resigned = {**json.loads(old_pointer), "manifest_digest": other,
                "signature": base64.b64encode(sign_release(params.signing_key, other, name="tracker",
                                                           version="1")).decode()}
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(resigned).encode())
    with pytest.raises(VerificationError, match="must not change under the same version"):
        agent.sync()
    assert _current_version(agent) == "1"


def test_rollback_returns_to_the_previous_version_and_holds(tmp_path, params, light):
    agent = _agent(tmp_path, params)
    with pytest.raises(FleetError, match="no release published"):
        agent.sync()
    with pytest.raises(FleetError, match="nothing to roll back to"):
        agent.rollback()
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent.sync()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    agent.sync()

    assert agent.rollback() == {"action": "rolled-back", "version": "1", "previous": "2"}
    assert _current_version(agent) == "1" and verify_bundle(agent.current).ok
    status = agent.status()
    assert (status["installed"], status["previous"], status["held_back"]) == ("1", "2", "2")
    assert agent.sync()["action"] == "held" and _current_version(agent) == "1"

    publish_bundle(light["3"], name="tracker", version="3", params=params)
    assert agent.sync()["action"] == "installed" and _current_version(agent) == "3"
    status = agent.status()
    assert (status["installed"], status["previous"], status["held_back"]) == ("3", "1", None)
    kept = sorted(p.name for p in (tmp_path / "device" / "versions").iterdir())
    assert kept == ["1", "3"]  # keep_versions=2: version 2 was pruned
    assert agent.rollback()["version"] == "1"


# --------------------------------------------------------------------------- crash in the middle


def _start_forwarder(listen_port: int, upstream_port: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FORWARDER, str(listen_port), str(upstream_port)], stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())
    proc.stdout.close()
    return proc, port


def test_endpoint_killed_in_the_middle_of_a_publish_keeps_the_old_pointer_and_a_rerun_finishes(
    tmp_path, params, bundles, endpoint
):
    upstream = int(endpoint.rsplit(":", 1)[1])
    proxy, port = _start_forwarder(0, upstream)
    first = proxy
    try:
        via = params.model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}"})
        publish_bundle(bundles["1"], name="tracker", version="1", params=via)
        agent = _agent(tmp_path, via)
        agent.sync()

        client = s3_client(via)
        done: list[str] = []

        def kill_endpoint(**_):
            if proxy.poll() is None:
                proxy.send_signal(signal.SIGKILL)
                proxy.wait()

        # detector.onnx (12 MB) goes last and in 5 MiB parts: the endpoint dies after its first part
        client.meta.events.register("after-call.s3.UploadPart", kill_endpoint)
        with pytest.raises(FleetError, match="detector.onnx.*pointer .* was not changed"):
            publish_bundle(bundles["2"], name="tracker", version="2", params=via, client=client,
                           on_progress=lambda event, item: done.append(item))
        assert done == ["tracker.yaml", "reid.onnx"]

        proxy, _ = _start_forwarder(port, upstream)  # the endpoint comes back on the same address
        assert read_pointer(via)["version"] == "1"
        assert agent.sync()["action"] == "up-to-date" and _current_version(agent) == "1"

        client, calls = _counting_client(via)
        result = publish_bundle(bundles["2"], name="tracker", version="2", params=via, client=client)
        assert result["skipped"] == ["tracker.yaml", "reid.onnx"] and result["previous"] == "1"
        assert result["uploaded"] == ["detector.onnx", "manifest.json", "manifest.sig"]
        written = {key.rsplit("/", 1)[-1] for op, key, _ in calls if op in ("PutObject", "CreateMultipartUpload")}
        assert written == {"detector.onnx", "manifest.json", "manifest.sig", "stable.json"}
        assert agent.sync()["action"] == "installed" and _current_version(agent) == "2"
    finally:
        for proc in {first, proxy}:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- many agents


def test_five_agents_in_parallel_processes_end_on_the_same_verified_version(tmp_path, params, bundles):
    publish_bundle(bundles["1"], name="tracker", version="1", params=params)
    params_file = tmp_path / "edge.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": params.model_dump(exclude={"signing_key"})}))
    env = {**os.environ, **FAKE_AWS}
    devices = [tmp_path / f"device{i}" for i in range(5)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "motops.fleet.cli", "edge", "sync", "-p", str(params_file), "--install-dir", str(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for d in devices
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out)["action"] == "installed"
    digests = set()
    for device in devices:
        state = json.loads((device / "state.json").read_text())
        assert state["installed"] == "1" and state["last_error"] is None
        report = verify_bundle(device / "current")
        assert report.ok, report.problems
        digests.add(manifest_digest(report.manifest))
        verify_release(params.public_key, (device / "current" / "manifest.sig").read_text(), report.manifest,
                       name="tracker", version="1")
    assert digests == {manifest_digest(bundles["1"])}


def test_edge_run_service_installs_and_stops_on_sigterm(tmp_path, params, bundles):
    """What systemd runs: ``motops edge run`` polls, installs, and exits cleanly on SIGTERM."""
    params_file = tmp_path / "edge.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": params.model_dump(exclude={"signing_key"})}))
    device = tmp_path / "device"
    proc = subprocess.Popen(
        [sys.executable, "-m", "motops.fleet.cli", "edge", "run", "-p", str(params_file), "--install-dir",
         str(device), "--poll-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **FAKE_AWS},
    )
    try:
        deadline = time.monotonic() + 60
        state = {}
        while time.monotonic() < deadline and proc.poll() is None:  # nothing published yet: it keeps polling
            if (device / "state.json").is_file():
                state = json.loads((device / "state.json").read_text())
                if state.get("last_error"):
                    break
            time.sleep(0.1)
        assert "no release published" in state.get("last_error", ""), state
        publish_bundle(bundles["1"], name="tracker", version="1", params=params)
        while time.monotonic() < deadline and proc.poll() is None and state.get("installed") != "1":
            time.sleep(0.1)
            state = json.loads((device / "state.json").read_text())
        assert state["installed"] == "1" and state["last_error"] is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopping after the current sync" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --------------------------------------------------------------------------- TensorRT step


def test_a_tensorrt_plan_is_built_once_cached_and_listed(tmp_path, params, light, monkeypatch):
    from motops.export import tensorrt as trt

    builds: list[Path] = []

    def fake_build(onnx_path, out_dir, *, name, precision, **_):
        out = Path(out_dir) / trt.plan_name(name, precision, compute_capability=(8, 7), tensorrt_version="10.3.0")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"plan for " + Path(onnx_path).name.encode())
        builds.append(out)
        return out

    from motops.fleet import agent as agent_mod

    monkeypatch.setattr(agent_mod, "_tensorrt_available", lambda: (True, "TensorRT 10.3.0 on a stand-in GPU (sm87)"))
    monkeypatch.setattr(trt, "current_target", lambda device=0: ((8, 7), "10.3.0"))
    monkeypatch.setattr(trt, "build_plan", fake_build)
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()  # installs 2
    plan = agent.current / "plans" / "detector.fp16.sm87.trt10.3.0.plan"
    report = verify_bundle(agent.current)
    assert report.ok, report.problems
    assert report.manifest["files"]["plans/detector.fp16.sm87.trt10.3.0.plan"]["role"] == "plan_detector_fp16"
    assert report.manifest["extra"]["edge_agent"]["signed_manifest_digest"] == manifest_digest(light["2"])
    assert plan.is_file() and agent.status()["tensorrt"]["cached"] is False

    # Same detector ONNX in another release: the cached plan is reused, nothing is rebuilt.
    publish_bundle(light["3"], name="tracker", version="3", params=params)
    agent.sync()
    assert len(builds) == 1 and agent.status()["tensorrt"]["cached"] is True
    assert agent.rollback()["version"] == "2"  # the locally extended manifest still checks out


# --------------------------------------------------------------------------- units


def test_keys_and_signatures(tmp_path, keys):
    with pytest.raises(SigningKeyError, match="exists; refusing"):
        generate_keypair(keys["private"], tmp_path / "x.pem")
    with pytest.raises(SigningKeyError, match="this is a public key"):
        load_private_key(keys["public"])
    with pytest.raises(SigningKeyError, match="looks like a private key"):
        load_public_key(keys["private"])
    with pytest.raises(SigningKeyError, match="not found"):
        load_public_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")
    assert oct(keys["private"].stat().st_mode & 0o777) == "0o600"
    digest = "ab" * 32
    signature = sign_release(keys["private"], digest, name="m", version="3")
    verify_release(keys["public"].read_text(), signature, digest, name="m", version="3")  # PEM text works too
    for kwargs in ({"name": "m", "version": "4"}, {"name": "n", "version": "3"}):
        with pytest.raises(SignatureError):
            verify_release(keys["public"], signature, digest, **kwargs)
    with pytest.raises(SignatureError):
        verify_release(keys["other_public"], signature, digest, name="m", version="3")
    with pytest.raises(SignatureError, match="not base64"):
        verify_release(keys["public"], "@@@", digest, name="m", version="3")


def test_versions_names_and_environment(params, light, keys):
    assert compare_versions("10", "9") == 1 and compare_versions("1.9", "1.10") == -1
    assert compare_versions("7", "7") == 0 and compare_versions("rc1", "7") is None
    env = {"MOTOPS_FLEET_BUCKET": "other-bucket", "MOTOPS_PUBLIC_KEY": "/keys/pub.pem", "MOTOPS_FLEET_CHANNEL": ""}
    changed = with_env_overrides(params, env)
    assert (changed.bucket, changed.public_key, changed.channel) == ("other-bucket", "/keys/pub.pem", "stable")
    for bad in ("../x", "a/b", "", "channels"):
        with pytest.raises(FleetError, match="release name"):
            publish_bundle(light["1"], name=bad, version="1", params=params)
    with pytest.raises(SigningKeyError, match="no signing key"):
        publish_bundle(light["1"], name="m", version="1", params=params.model_copy(update={"signing_key": None}))
    publish_bundle(light["1"], name="m", version="1", params=params)
    with pytest.raises(FleetError, match="already published with another manifest"):
        publish_bundle(light["2"], name="m", version="1", params=params)
    again = publish_bundle(light["1"], name="m", version="1", params=params)  # a rerun of a finished publish
    assert again["uploaded"] == [] and len(again["skipped"]) == 5


def test_cli_keygen_publish_sync_status_rollback(tmp_path, params, bundles):
    import typer

    from motops.fleet.cli import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["edge", "keygen", "--private", str(tmp_path / "k.pem"), "--public",
                              str(tmp_path / "k.pub")])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["fingerprint"]) == 16
    assert runner.invoke(app, ["edge", "keygen", "--private", str(tmp_path / "k.pem"), "--public",
                               str(tmp_path / "k2.pub")]).exit_code == 2
    fleet = params.model_copy(update={"signing_key": str(tmp_path / "k.pem"), "public_key": str(tmp_path / "k.pub")})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": fleet.model_dump()}))
    common = ["-p", str(params_file), "--install-dir", str(tmp_path / "edge")]
    for version in ("1", "2"):
        out = runner.invoke(app, ["publish", "--bundle", str(bundles[version]), "--name", "tracker",
                                  "-p", str(params_file)])
        assert out.exit_code == 0, out.output
        out = runner.invoke(app, ["edge", "sync", *common])
        assert out.exit_code == 0, out.output
    status = json.loads(runner.invoke(app, ["edge", "status", *common]).output)
    assert (status["installed"], status["previous"]) == ("2", "1")
    assert json.loads(runner.invoke(app, ["edge", "rollback", *common]).output)["version"] == "1"
    bad = runner.invoke(app, ["publish", "--bundle", str(bundles["1"]), "--name", "tracker", "-p", str(params_file)])
    assert bad.exit_code == 1 and "older than" in bad.output
    typo = runner.invoke(app, ["edge", "status", *common, "-S", "fleet.chanel=x"])
    assert typo.exit_code == 2 and "did you mean 'fleet.channel'" in typo.output


def test_cli_publishes_the_champion_from_the_registry(tmp_path, params, light, monkeypatch):
    """``motops publish`` without --bundle: models:/NAME@champion through the registry module (stood in for)."""
    import shutil
    import types

    import typer

    from motops.fleet.cli import register

    asked = []

    def download_bundle(model_uri, dst, params_, root=None):
        asked.append(model_uri)
        shutil.copytree(light["2"], dst)
        return Path(dst)

    def find_version_by_digest(registry, digest):
        assert registry.model_name == "motops-tracker" and digest == manifest_digest(light["2"])
        return "7"

    fake = types.ModuleType("motops.registry.mlflow_registry")
    fake.download_bundle, fake.find_version_by_digest = download_bundle, find_version_by_digest
    monkeypatch.setitem(sys.modules, "motops.registry.mlflow_registry", fake)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": params.model_dump()}))
    app = typer.Typer()
    register(app)
    out = CliRunner().invoke(app, ["publish", "-p", str(params_file)])
    assert out.exit_code == 0, out.output
    assert asked == ["models:/motops-tracker@champion"]
    pointer = read_pointer(params)
    assert (pointer["name"], pointer["version"]) == ("motops-tracker", "7")


def test_run_forever_stops_and_survives_failures(tmp_path, params, light):
    import threading

    agent = _agent(tmp_path, params)
    agent.run_forever(0.01, max_iterations=2)  # nothing published: failures are recorded, not raised
    assert "no release published" in agent.status()["last_error"]
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run_forever, kwargs={"poll_interval": 0.05, "stop": stop})
    thread.start()
    deadline = time.monotonic() + 30
    while agent.status()["installed"] != "1" and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and agent.status()["installed"] == "1"


"""Fleet distribution against a real S3 endpoint: moto's server mode on 127.0.0.1, started here.

Publish -> sync -> track; tampered files, foreign signatures, replayed metadata refused with
``current`` untouched; the endpoint killed in the middle of a multipart upload and the publish
resumed; rollback and hold; five agents in parallel processes; the TensorRT plan step with a
stand-in builder (this machine has no CUDA). Then the attacks of issue 15, each against the
same server: endless data (a listed file, metadata), slow retrieval against the deadline and
the lock, freeze, cross-channel and cross-name replay, key rotation and revocation, disk full
and a read-only folder (tmpfs in a private mount namespace), corrupt trusted metadata and state.
"""

from __future__ import annotations

import json
import os
import re
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
from motops.fleet import (
    EdgeAgent,
    FleetError,
    Repository,
    Signers,
    SigningKeyError,
    StaleVersionError,
    VerificationError,
    generate_keypair,
    load_private_key,
    load_public_key,
    publish_bundle,
    with_env_overrides,
)
from motops.fleet.repository import release_targets, signer_for
from motops.fleet.store import compare_versions, metadata_key, release_key, s3_client
from motops.runtime.bundle import load_bundle, manifest_digest, verify_bundle

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
    assert result["previous"] is None and result["skipped"] == [] and result["created_root"] is True
    assert set(result["uploaded"]) == {"detector.onnx", "reid.onnx", "tracker.yaml", "manifest.json"}
    assert (result["root_version"], result["targets_version"], result["timestamp_version"]) == (1, 1, 1)
    assert result["manifest_digest"] == manifest_digest(bundles["1"])
    client = s3_client(params)
    head = client.head_object(Bucket=BUCKET, Key=release_key(params, "tracker", "1", "detector.onnx"))
    assert head["Metadata"]["sha256"] == json.loads((bundles["1"] / "manifest.json").read_text())["files"][
        "detector.onnx"]["sha256"]
    state = Repository(params).load()
    assert state.release() == {"name": "tracker", "version": "1"}
    target = state.targets.signed.targets["tracker/1/detector.onnx"]
    assert target.custom == {"name": "tracker", "version": "1", "channel": "stable", "role": "detector"}
    assert target.length == (bundles["1"] / "detector.onnx").stat().st_size

    agent = _agent(tmp_path, params, load_check=True)
    assert agent.sync() == {"version": "1", "previous": None, "channel_version": "1", "action": "installed"}
    assert agent.current.is_symlink() and os.readlink(agent.current) == os.path.join("versions", "1")
    assert verify_bundle(agent.current).ok
    status = agent.status()
    assert status["installed"] == "1" and status["channel_version"] == "1" and status["last_error"] is None
    assert status["root_version"] == 1 and status["timestamp_version"] == 1
    assert 0 <= status["timestamp_age_s"] < 60 and status["timestamp_expires_in_s"] > params.timestamp_expiry_s - 60
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
    fetched = {key.rsplit("/", 1)[-1] for op, key, _ in calls if op == "GetObject" and "/tuf/" not in key}
    assert fetched == {"reid.onnx"}
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
    size = (light["1"] / "detector.onnx").stat().st_size
    assert [rng for name, rng in gets if name == "detector.onnx"] == [f"bytes={head}-{size - 1}"]  # resumed, bounded
    reid = (light["1"] / "reid.onnx").stat().st_size
    assert [rng for name, rng in gets if name == "reid.onnx"] == [f"bytes=26-{reid - 1}", f"bytes=0-{reid - 1}"]
    assert verify_bundle(agent.current).ok and not (agent.current / "stray.bin").exists()


def test_a_manifest_altered_in_the_bucket_is_refused(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client = s3_client(params)
    key = release_key(params, "tracker", "1", "manifest.json")
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["metrics"]["idf1"] = 0.99
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    agent = _agent(tmp_path, params)
    with pytest.raises(VerificationError, match="manifest.json.*signed targets metadata says"):
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


def forge(params, signer, bundle=None, *, name="tracker", version="2", channel=None):
    """What an attacker holding ``signer`` writes: targets (of ``bundle`` as NAME/VERSION), snapshot and timestamp
    signed with it, over the channel's real metadata (python-tuf's API, the publisher's key checks skipped)."""
    repo = Repository(params, channel)
    repo._check_signer = lambda *args: None  # the attacker signs with whatever key they hold
    state = repo.load()
    targets = dict(state.targets.signed.targets)
    if bundle is not None:
        targets = release_targets(
            json.loads((bundle / "manifest.json").read_text())["files"],
            manifest=(bundle / "manifest.json").read_bytes(), name=name, version=version, channel=repo.channel,
            path_of=lambda rel: f"{name}/{version}/{rel}",
        )
    return repo.write_release(targets, state, Signers(root=[], targets=signer, online=signer))


def test_a_release_signed_with_another_key_is_refused(tmp_path, params, light, keys):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    with pytest.raises(SigningKeyError, match="is not a targets key of root version 1"):
        publish_bundle(light["2"], name="tracker", version="2", params=params, signing_key=keys["other"])
    forge(params, signer_for(keys["other"], "attacker"), light["2"])
    with pytest.raises(VerificationError, match="UnsignedMetadataError"):
        agent.sync()
    assert _current_version(agent) == "1"
    assert "UnsignedMetadataError" in agent.status()["last_error"]
    assert not (tmp_path / "device" / "staging" / "2").exists()  # refused before any download


def test_replayed_old_metadata_is_refused_and_a_deliberate_rollback_needs_allow_rollback(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    client = s3_client(params)
    key = metadata_key(params, "stable", "timestamp.json")
    old_timestamp = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    latest_timestamp = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    agent = _agent(tmp_path, params)
    assert agent.sync()["version"] == "2"

    with pytest.raises(StaleVersionError, match="points at tracker 2; 1 is older than it"):
        publish_bundle(light["1"], name="tracker", version="1", params=params)

    client.put_object(Bucket=BUCKET, Key=key, Body=old_timestamp)  # a replayed, genuinely signed, old timestamp
    with pytest.raises(VerificationError, match="BadVersionNumberError"):
        agent.sync()
    assert _current_version(agent) == "2"

    forged = json.loads(old_timestamp)
    forged["signed"]["version"] = 9  # the old signature does not cover version 9
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(forged).encode())
    with pytest.raises(VerificationError, match="UnsignedMetadataError"):
        agent.sync()

    # The publisher refuses to build on forged metadata; once the bucket is restored it rolls the fleet back on
    # purpose, and devices still need allow_rollback.
    with pytest.raises(VerificationError, match="timestamp.json: does not verify with the timestamp key"):
        publish_bundle(light["1"], name="tracker", version="1", params=params, allow_older=True)
    client.put_object(Bucket=BUCKET, Key=key, Body=latest_timestamp)
    publish_bundle(light["1"], name="tracker", version="1", params=params, allow_older=True)
    with pytest.raises(StaleVersionError, match="names tracker 1, older than the installed 2"):
        agent.sync()
    result = agent.sync(allow_rollback=True)
    assert result["action"] == "installed" and _current_version(agent) == "1"


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
        with pytest.raises(FleetError, match="detector.onnx.*channel metadata .* was not changed"):
            publish_bundle(bundles["2"], name="tracker", version="2", params=via, client=client,
                           on_progress=lambda event, item: done.append(item))
        assert done == ["tracker.yaml", "reid.onnx"]

        proxy, _ = _start_forwarder(port, upstream)  # the endpoint comes back on the same address
        assert Repository(via).load().release()["version"] == "1"
        assert agent.sync()["action"] == "up-to-date" and _current_version(agent) == "1"

        client, calls = _counting_client(via)
        result = publish_bundle(bundles["2"], name="tracker", version="2", params=via, client=client)
        assert result["skipped"] == ["tracker.yaml", "reid.onnx"] and result["previous"] == "1"
        assert result["uploaded"] == ["detector.onnx", "manifest.json"]
        written = {key.rsplit("/", 1)[-1] for op, key, _ in calls if op in ("PutObject", "CreateMultipartUpload")}
        assert written == {"detector.onnx", "manifest.json", "2.targets.json", "2.snapshot.json", "timestamp.json"}
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
        assert (device / "metadata" / "stable" / "root.json").is_file()
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
        assert "no release published" in (state.get("last_error") or ""), state
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
    from motops.runtime import tensorrt as trt

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
    signer = signer_for(keys["private"], "fleet.signing_key")
    assert signer.public_key.keyid == signer_for(keys["private"].read_text(), "x").public_key.keyid  # PEM text too
    with pytest.raises(SigningKeyError, match="fleet.root_keys key: .*this is a public key"):
        signer_for(keys["public"], "fleet.root_keys")


def test_versions_names_and_environment(params, light, keys):
    assert compare_versions("10", "9") == 1 and compare_versions("1.9", "1.10") == -1
    assert compare_versions("7", "7") == 0 and compare_versions("rc1", "7") is None
    env = {"MOTOPS_FLEET_BUCKET": "other-bucket", "MOTOPS_PUBLIC_KEY": "/keys/pub.pem", "MOTOPS_FLEET_CHANNEL": ""}
    changed = with_env_overrides(params, env)
    assert (changed.bucket, changed.public_key, changed.channel) == ("other-bucket", "/keys/pub.pem", "stable")
    for bad in ("../x", "a/b", "", "tuf"):
        with pytest.raises(FleetError, match="release name"):
            publish_bundle(light["1"], name=bad, version="1", params=params)
    with pytest.raises(SigningKeyError, match="no signing key"):
        publish_bundle(light["1"], name="m", version="1", params=params.model_copy(update={"signing_key": None}))
    publish_bundle(light["1"], name="m", version="1", params=params)
    with pytest.raises(FleetError, match="already published with another manifest"):
        publish_bundle(light["2"], name="m", version="1", params=params)
    again = publish_bundle(light["1"], name="m", version="1", params=params)  # a rerun of a finished publish
    assert again["uploaded"] == [] and len(again["skipped"]) == 4


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
    assert status["variant"].startswith(("fp32: ", "int8: ")) and "CPU: " in status["variant"]  # which runs, why
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
    assert Repository(params).load().release() == {"name": "motops-tracker", "version": "7"}


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



# --------------------------------------------------------------------------- attacks (issue 15)


def test_endless_data_on_a_listed_file_stops_at_its_signed_length(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    client = s3_client(params)
    key = release_key(params, "tracker", "2", "detector.onnx")
    declared = (light["2"] / "detector.onnx").stat().st_size
    client.put_object(Bucket=BUCKET, Key=key, Body=b"\0" * (32 << 20))  # 32 MiB where 1 MiB is signed
    with pytest.raises(VerificationError, match=r"detector.onnx: the object holds 33554432 bytes, the signed targets"):
        agent.sync()
    received = agent.last_reader.received
    others = sum(p.stat().st_size for p in light["2"].iterdir() if p.name != "detector.onnx")
    assert received < others + (64 << 10) < declared  # not one byte of the 32 MiB body was read
    assert _current_version(agent) == "1"
    assert not (tmp_path / "device" / "staging" / "2" / "detector.onnx.part").exists()
    assert "33554432 bytes" in agent.status()["last_error"]


def test_endless_metadata_is_cut_at_the_length_python_tuf_allows(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    client = s3_client(params)
    junk = b"{" + b" " * (40 << 20)  # 40 MiB
    for name, limit in (("timestamp.json", 16384), ("2.root.json", 512_000)):
        client.put_object(Bucket=BUCKET, Key=metadata_key(params, "stable", name), Body=junk)
        with pytest.raises(FleetError, match=f"more than {limit} bytes"):
            agent.sync()
        assert agent.last_reader.received <= limit + 1  # the request asked for limit + 1 bytes, no more
        client.delete_object(Bucket=BUCKET, Key=metadata_key(params, "stable", name))
    assert _current_version(agent) == "1"


SLOW_PROXY = r"""
import http.client, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
upstream, slow = int(sys.argv[1]), sys.argv[2]

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _forward(self, method):
        conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
        conn.request(method, self.path, headers={k: v for k, v in self.headers.items()})
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.end_headers()
        if method == "HEAD":
            return
        if slow in self.path.split("?")[0]:
            for i in range(len(body)):  # one byte every 0.2 s: never idle long enough for a read timeout
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self.wfile.write(body)

    def do_GET(self):
        try:
            self._forward("GET")
        except OSError:
            pass

    def do_HEAD(self):
        self._forward("HEAD")

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_slow_retrieval_ends_at_the_deadline_and_the_lock_is_released(tmp_path, params, light, endpoint):
    import threading

    from motops.fleet import SyncDeadlineError

    publish_bundle(light["1"], name="tracker", version="1", params=params)
    proxy = subprocess.Popen([sys.executable, "-c", SLOW_PROXY, endpoint.rsplit(":", 1)[1], "detector.onnx"],
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(proxy.stdout.readline())
        slow = params.model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}", "sync_deadline_s": 3.0,
                                         "timeout_s": 1.0, "max_attempts": 1, "lock_timeout_s": 0.3})
        agent = _agent(tmp_path, slow)
        outcome: dict = {}

        def run() -> None:
            start = time.monotonic()
            try:
                agent.sync()
            except FleetError as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - start

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.5)  # in the middle of the trickle: a second agent on the same folder waits, then gives up
        waiting = _agent(tmp_path, params.model_copy(update={"lock_timeout_s": 0.3}))
        start = time.monotonic()
        with pytest.raises(FleetError, match=r"still holds the lock after 0.3 s \(fleet.lock_timeout_s\)"):
            waiting.sync()
        assert time.monotonic() - start < 2
        thread.join(30)
        assert isinstance(outcome["error"], SyncDeadlineError), outcome
        assert outcome["seconds"] < slow.sync_deadline_s + slow.timeout_s + 0.5, outcome  # deadline + one read
        assert "fleet.sync_deadline_s=3" in agent.status()["last_error"]
        assert not agent.current.exists()
        # The lock is free again: a sync through the real endpoint resumes the partial file and installs.
        part = tmp_path / "device" / "staging" / "1" / "detector.onnx.part"
        assert 0 < part.stat().st_size < 64
        assert waiting.sync()["action"] == "installed" and _current_version(waiting) == "1"
    finally:
        proxy.kill()
        proxy.wait()


def test_a_frozen_channel_expires_and_the_resign_flow_keeps_a_healthy_one_alive(tmp_path, params, light):
    short = params.model_copy(update={"timestamp_expiry_s": 2.0})
    publish_bundle(light["1"], name="tracker", version="1", params=short)
    agent = _agent(tmp_path, short)
    assert agent.sync()["action"] == "installed"
    time.sleep(2.2)  # nobody re-signs: a mirror serving this forever is a freeze attack
    with pytest.raises(VerificationError, match="timestamp.json is expired.*out of date"):
        agent.sync()
    status = agent.status()
    assert status["timestamp_expires_in_s"] <= 0 and status["timestamp_age_s"] >= 2
    assert "expired" in status["last_error"]
    assert _current_version(agent) == "1"

    import importlib.util

    spec = importlib.util.spec_from_file_location("motops_flows_resign", Path(__file__).parents[1] / "flows/resign.py")
    flows = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flows)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fleet": params.model_dump()}))
    result = flows.resign.fn(repo_dir=str(tmp_path))  # what the `resign` deployment runs every hour
    assert result["stable"]["resigned"] == ["timestamp"] and result["stable"]["timestamp_version"] == 2
    assert agent.sync()["action"] == "up-to-date" and agent.status()["last_error"] is None
    assert agent.status()["timestamp_expires_in_s"] > 3000


def test_metadata_of_another_channel_or_release_name_is_refused_and_the_device_is_not_stuck(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    publish_bundle(light["3"], name="other", version="5", params=params, channel="beta")
    client = s3_client(params)
    stable, beta = metadata_key(params, "stable"), metadata_key(params, "beta")
    saved = {}
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=beta)["Contents"]:
        name = obj["Key"].rsplit("/", 1)[1]
        saved[name] = client.get_object(Bucket=BUCKET, Key=stable + name)["Body"].read()  # same names in stable
        client.copy_object(Bucket=BUCKET, Key=stable + name, CopySource={"Bucket": BUCKET, "Key": obj["Key"]})
    with pytest.raises(VerificationError, match="signed for channel 'beta', this device follows 'stable'"):
        agent.sync()
    assert _current_version(agent) == "1" and agent.status()["root_version"] == 1
    for name, data in saved.items():  # the bucket is repaired; the real release 5 of tracker installs
        client.put_object(Bucket=BUCKET, Key=stable + name, Body=data)
    publish_bundle(light["2"], name="tracker", version="5", params=params)
    assert agent.sync()["action"] == "installed" and _current_version(agent) == "5"
    assert agent.status()["name"] == "tracker"


def test_key_rotation_is_followed_without_touching_the_device_and_a_revoked_key_is_refused(tmp_path, params, light):
    folder = tmp_path / "keys"
    folder.mkdir()
    new = {n: generate_keypair(folder / f"{n}.pem", folder / f"{n}.pub")[0] for n in ("r1", "r2", "s2", "t2")}
    publish_bundle(light["1"], name="tracker", version="1", params=params)  # one key: root = targets = timestamp
    device = _agent(tmp_path, params, "device")
    device.sync()

    rotated = Repository(params).rotate(
        Signers(root=[signer_for(new["r1"], "r"), signer_for(new["r2"], "r")],
                targets=signer_for(new["s2"], "s"), online=signer_for(new["t2"], "t")), threshold=2)
    assert rotated["root_version"] == 2
    after = params.model_copy(update={"root_keys": (str(new["r1"]), str(new["r2"])), "root_threshold": 2,
                                      "signing_key": str(new["s2"]), "timestamp_key": str(new["t2"])})
    with pytest.raises(SigningKeyError, match="not a targets key of root version 2"):
        publish_bundle(light["2"], name="tracker", version="2", params=params)  # the old key is revoked
    publish_bundle(light["2"], name="tracker", version="2", params=after)
    assert device.sync()["action"] == "installed" and device.status()["root_version"] == 2

    with pytest.raises(SigningKeyError, match="needs 2 of its root keys"):  # one root key cannot rotate alone
        Repository(after.model_copy(update={"root_keys": (str(new["r1"]),)})).rotate(Signers.from_params(after))

    # The revoked (stolen) key signs a release 3: refused by the device that followed the rotation, and by a
    # device that only ever trusted root 1 (it walks the chain of roots first).
    forge(after, signer_for(params.signing_key, "stolen"), light["3"], version="3")
    fresh = _agent(tmp_path, params, "fresh")
    for agent in (device, fresh):
        with pytest.raises(VerificationError, match="UnsignedMetadataError"):
            agent.sync()
    assert _current_version(device) == "2" and fresh.status()["root_version"] == 2 and not fresh.current.exists()

    # A new root signed by one of the two root keys (written by hand) does not meet the threshold.
    half = Repository(after)._root(3, Signers.from_params(after), [signer_for(new["r1"], "r")], 1)
    half.sign(signer_for(new["r1"], "r"))
    s3_client(params).put_object(Bucket=BUCKET, Key=metadata_key(params, "stable", "3.root.json"), Body=half.to_bytes())
    with pytest.raises(VerificationError, match="root was signed by 1/2 keys"):
        device.sync()
    assert device.status()["root_version"] == 2 and _current_version(device) == "2"


def test_corrupt_trusted_metadata_or_state_is_refused_never_reset(tmp_path, params, light):
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    publish_bundle(light["2"], name="tracker", version="2", params=params)
    for name in ("timestamp.json", "root_history/1.root.json"):
        path = agent.metadata_dir / name
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])
        with pytest.raises(VerificationError, match=r"root.json|timestamp.json"):
            agent.sync()
        with pytest.raises(VerificationError, match="trusted metadata is corrupt.*never reset"):
            agent.sync()
        assert path.read_bytes() == good[: len(good) // 2] and _current_version(agent) == "1"
        path.write_bytes(good)
    state = agent.state_path.read_text()
    agent.state_path.write_text(state[:40])
    with pytest.raises(FleetError, match="state.json: corrupt or unreadable.*refusing to run"):
        agent.sync()
    assert agent.state_path.read_text() == state[:40] and "corrupt" in agent.status()["last_error"]
    agent.state_path.write_text(state)
    assert agent.sync()["action"] == "installed"


def test_a_device_of_the_pre_tuf_agent_migrates_by_upgrading(tmp_path, params, light):
    """A device installed by today's agent (state.json without TUF fields, no trusted metadata) keeps its
    public key; the new agent accepts the channel's root 1 because that key signed it, and re-downloads nothing."""
    publish_bundle(light["1"], name="tracker", version="1", params=params)
    agent = _agent(tmp_path, params)
    agent.sync()
    state = json.loads(agent.state_path.read_text())
    for key in ("manifest_sha256",):
        state.pop(key)
        for entry in state["versions"].values():
            entry.pop(key, None)
    agent.state_path.write_text(json.dumps(state))
    (agent.current / "manifest.sig").write_text("b2xkIHNpZ25hdHVyZQ==\n")  # what the old agent left
    import shutil

    shutil.rmtree(tmp_path / "device" / "metadata")
    client, calls = _counting_client(params)
    upgraded = _agent(tmp_path, params, client=client)
    assert upgraded.sync()["action"] == "up-to-date"
    fetched = {key.rsplit("/", 1)[-1] for op, key, _ in calls if op == "GetObject" and "/tuf/" not in key}
    assert fetched == {"manifest.json"} and upgraded.status()["root_version"] == 1
    with pytest.raises(SigningKeyError, match="needs a trusted root"):
        shutil.rmtree(tmp_path / "device" / "metadata")
        EdgeAgent(tmp_path / "device", params.model_copy(update={"public_key": None}), load_check=False).sync()


NAMESPACE_SCRIPT = r"""
import json, os, subprocess, sys
from pathlib import Path
from motops.config import FleetParams
from motops.fleet import EdgeAgent, publish_bundle

args = json.loads(sys.argv[1])
params = FleetParams(**args["params"])
full, ro = Path(args["full"]), Path(args["ro"])
for folder in (full, ro):  # a 4 MiB disk each, seen only by this process and its children
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    EdgeAgent(folder, params, load_check=False).sync()  # version 1 installed
publish_bundle(args["v2"], name="tracker", version="2", params=params)

def sync(folder):
    proc = subprocess.run([sys.executable, "-m", "motops.fleet.cli", "edge", "sync", "-p", args["params_file"],
                           "--install-dir", str(folder)], capture_output=True, text=True)
    state = json.loads((folder / "state.json").read_text())
    staged = sorted(str(p.relative_to(folder)) for p in (folder / "staging").rglob("*") if p.is_file())
    return {"rc": proc.returncode, "stderr": proc.stderr, "last_error": state["last_error"], "staged": staged,
            "current": os.readlink(folder / "current")}

out = {}
manifest = json.loads((Path(args["v2"]) / "manifest.json").read_text())
declared = sum(e["size"] for e in manifest["files"].values()) + (Path(args["v2"]) / "manifest.json").stat().st_size
st = os.statvfs(full)
room = declared // st.f_frsize + 1  # passes the free-space check; the files' blocks and metadata do not fit
(full / "filler").write_bytes(b"x" * ((st.f_bavail - room) * st.f_frsize))
out["full"] = sync(full)
(full / "filler").write_bytes(b"x" * ((st.f_bavail - room // 2) * st.f_frsize))  # half the room: refused first
out["no_room"] = sync(full)
subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
out["ro"] = sync(ro)
print(json.dumps(out))
"""


def test_disk_full_and_read_only_folder_fail_in_one_line_with_current_intact(tmp_path, params, light):
    import shutil

    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    ).returncode:
        pytest.skip("needs unshare with user and mount namespaces (a private tmpfs for a full disk)")
    fleet = params.model_copy(update={"min_free_mb": 0.0})
    publish_bundle(light["1"], name="tracker", version="1", params=fleet)
    params_file = tmp_path / "edge.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": fleet.model_dump(exclude={"signing_key"})}))
    args = {"params": fleet.model_dump(), "params_file": str(params_file), "v2": str(light["2"]),
            "full": str(tmp_path / "full"), "ro": str(tmp_path / "ro")}
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", NAMESPACE_SCRIPT,
                           json.dumps(args)], capture_output=True, text=True, env={**os.environ, **FAKE_AWS},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, expect in (("full", r"No space left on device \[ENOSPC\]"), ("no_room", "refused before writing"),
                         ("ro", r"Read-only file system \[EROFS\]")):
        result = out[case]
        lines = result["stderr"].strip().splitlines()
        assert result["rc"] == 1 and len(lines) == 1 and lines[0].startswith("error: "), (case, result)
        assert re.search(expect, lines[0]), (case, lines[0])
        assert result["current"] == os.path.join("versions", "1") and result["staged"] == [], (case, result)
    assert re.search(r"No space left on device \[ENOSPC\]", out["full"]["last_error"])  # recorded once space freed
    assert "refused before writing" in out["no_room"]["last_error"]
    assert out["ro"]["last_error"] is None  # could not be written: the one printed line is the record


# --------------------------------------------------------------------------- the edge install

ROOT = Path(__file__).resolve().parents[1]
#: The training stack: none of it may be imported by ``motops edge sync`` or ``motops track --engine``.
HEAVY = ("torch", "torchvision", "ultralytics", "mlflow", "prefect", "dvc", "great_expectations", "polars")
# Written into the edge venv: at exit, every process lists the modules it loaded.
SITECUSTOMIZE = """
import atexit, os, sys
_out = os.environ.get("MOTOPS_TEST_MODULES_DIR")
if _out:
    def _dump():
        with open(os.path.join(_out, f"{os.getpid()}.txt"), "w") as fh:
            fh.write("\\n".join(sorted(sys.modules)))
    atexit.register(_dump)
"""


def _dir_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def test_the_edge_install_syncs_and_tracks_without_the_training_stack(tmp_path, params, bundles, clip):
    """A fresh venv with only the base dependencies (pinned by requirements.lock): sync, track, and nothing heavy."""
    started = time.perf_counter()
    source = tmp_path / "motops-src"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    import shutil

    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "edge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "requirements.lock"), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "motops" in installed and "onnxruntime" in installed and "tuf" in installed
    assert not installed & {"torch", "torchvision", "ultralytics", "mlflow", "prefect", "dvc", "polars"}, installed
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    install_s = time.perf_counter() - started

    publish_bundle(bundles["1"], name="tracker", version="1", params=params)
    params_file = tmp_path / "edge.yaml"
    params_file.write_text(yaml.safe_dump({"fleet": params.model_dump()}))
    modules_dir = tmp_path / "modules"
    modules_dir.mkdir()
    env = {**os.environ, "MOTOPS_TEST_MODULES_DIR": str(modules_dir)}
    env.pop("PYTHONPATH", None)  # the venv's own motops, not the checkout's
    motops = str(venv / "bin" / "motops")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([motops, *args], capture_output=True, text=True, env=env, timeout=300, check=False,
                              cwd=tmp_path)

    sync = run("edge", "sync", "-p", str(params_file), "--install-dir", str(tmp_path / "device"))
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert json.loads(sync.stdout)["version"] == "1"
    current = tmp_path / "device" / "current"
    track = run("track", str(clip), "--engine", str(current), "--out", str(tmp_path / "run"), "--no-video")
    assert track.returncode == 0, track.stdout + track.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames"] == 4 and (tmp_path / "run" / "tracks.txt").is_file()

    # A training command says which extra it needs, in one line, instead of a traceback.
    ingest = run("ingest")
    assert ingest.returncode == 2 and "Traceback" not in ingest.stderr, ingest.stderr
    assert len(ingest.stderr.strip().splitlines()) == 1 and "pip install 'motops[train]'" in ingest.stderr

    dumps = sorted(modules_dir.glob("*.txt"))
    assert len(dumps) >= 3, dumps  # sync, track, ingest (and pip's own interpreters, harmlessly)
    for dump in dumps:
        loaded = set(dump.read_text().split())
        assert not {m for m in loaded if m.split(".")[0] in HEAVY}, f"{dump.name}: {sorted(loaded & set(HEAVY))}"
    loaded_any = set().union(*(set(d.read_text().split()) for d in dumps))
    assert {"onnxruntime", "tuf", "motops.runtime.bundle", "motops.fleet.agent"} <= loaded_any

    # What `motops track` costs before it reads a frame: the CLI and the runtime it loads.
    clock = time.perf_counter()
    imported = subprocess.run([str(py), "-c", "import motops.cli, motops.runtime.bundle, motops.runtime.runner"],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
    import_s = time.perf_counter() - clock
    assert imported.returncode == 0, imported.stderr
    size_mb = _dir_mb(site)
    print(f"edge install: {install_s:.0f} s to create, site-packages {size_mb:.0f} MB, python + import of "
          f"motops track's modules {import_s:.2f} s, whole test {time.perf_counter() - started:.0f} s")
    # Issue #14's goal is <= 250 MB. Measured: 417 MB, of which the three packages the runtime cannot
    # do without take 304 (opencv-python-headless 5.0: 153, onnxruntime: 78, numpy: 73) and pip +
    # setuptools 24; the goal is out of reach with OpenCV 5.0's wheel. The bound catches what matters:
    # any part of the training stack (torch alone is > 1 GB) coming back into the base install.
    assert size_mb <= 500, f"edge install is {size_mb:.0f} MB (417 MB when written); something heavy came in"

"""Who may do what in production (issue 15, item 6): infra/ lets no one in without credentials.

Two kinds of test:

* the compose, Kubernetes, MinIO and systemd files, read the way a reviewer would: every
  secret is required (compose's ``${VAR:?message}``, evaluated here with compose's own rules),
  no service is published on every interface unless it authenticates each request itself, each
  service gets its own least-privileged S3 user, devices read the fleet bucket and nothing else,
  and only the publisher holds the signing key;
* the registry code path against a real ``mlflow server --app-name basic-auth`` on 127.0.0.1:
  missing and wrong credentials are refused in one line naming the user and the variables
  (never the password), a read-only user may read but not move an alias, and the right
  credentials register, read and promote.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import mlflow_server, wait_healthy, yaml_docs

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|TOKEN|PRIVATE", re.IGNORECASE)
HEALTH_TIMEOUT_S = 120


# --------------------------------------------------------------------------- helpers: files


# The parsed files: the fixtures `compose` and `k8s` (conftest.py), shared with tests/test_infra.py.


def _strings(node, path: str = ""):
    """Every string in a parsed YAML tree with where it is (``services.mlflow.environment.X``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


class ComposeRefusal(Exception):
    """What ``docker compose`` prints when a required variable is missing."""


_VAR = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (the compose specification's rules for ``$$``, ``${V}``,
    ``${V:-d}``, ``${V-d}``, ``${V:?err}``, ``${V?err}``, ``${V:+r}``), raising on a required one."""

    def repl(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        empty = not value
        if op in (":?", "?") and (value is None or (op == ":?" and empty)):
            raise ComposeRefusal(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and empty)):
            return arg
        if op in (":+", "+"):
            return arg if (value is not None and (op == "+" or not empty)) else ""
        return value or ""

    return _VAR.sub(repl, text)


def _interpolate_all(doc, env: dict[str, str]) -> None:
    for _, text in _strings(doc):
        _interpolate(text, env)


def _env_example() -> dict[str, str]:
    values = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _compose_variables(compose: dict) -> dict[str, list[str]]:
    """Each variable compose interpolates -> the operators it is used with ('' for a bare ${V})."""
    found: dict[str, list[str]] = {}
    for _, text in _strings(compose):
        for m in _VAR.finditer(text):
            name = m.group("name") or m.group("bare")
            if name:
                found.setdefault(name, []).append(m.group("op") or "")
    return found


# --------------------------------------------------------------------------- compose: secrets


def test_compose_has_no_default_secret_and_refuses_to_start_without_each(compose):
    text = (INFRA / "compose.yaml").read_text()
    assert "change-me" not in text.lower() and "changeme" not in text.lower()
    used = _compose_variables(compose)
    assert used, "compose.yaml interpolates no variable: where do its secrets come from?"
    for name, ops in used.items():
        # No fallback for anything: a missing .env must stop compose, not start with a default.
        assert set(ops) == {":?"}, (
            f"compose.yaml: ${{{name}}} used with {sorted(set(ops))}; expected only ${{{name}:?...}}")

    # The template lists every variable and gives no secret a value.
    example = _env_example()
    assert set(used) == set(example), f"infra/.env.example and compose.yaml differ: {set(used) ^ set(example)}"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value == "", f"infra/.env.example: {name} has a value; secrets are left empty on purpose"

    # Compose's own rules: with every value set it starts; with any one missing or empty it refuses, naming it.
    full = {name: "x" * 16 for name in used}
    _interpolate_all(compose, full)
    for name in used:
        for env in ({k: v for k, v in full.items() if k != name}, {**full, name: ""}):
            with pytest.raises(ComposeRefusal, match=rf"\b{name}\b"):
                _interpolate_all(compose, env)
    # ... and the interpolation above is not vacuous: a fallback would have started.
    assert _interpolate("${A:-change-me-please}", {}) == "change-me-please"
    with pytest.raises(ComposeRefusal):
        _interpolate("${A:?set A}", {"A": ""})


def test_compose_env_holds_secrets_only_as_required_variables(compose):
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"service {name}: environment as a mapping, please"
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", value), (
                    f"service {name}: {key} is {value!r}; expected ${{VAR:?message}} from infra/.env")


# --------------------------------------------------------------------------- compose: ports


def _published(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) of each published port; host_ip '' means every interface."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", parts[0], parts[0]))  # a bare port: a random host port on every interface
    return out


#: Published on every interface because devices must reach it, and it authenticates every request
#: itself (S3 SigV4; no bucket is anonymous: checked below).
OPEN_BY_DESIGN = {("minio", "9000")}


def test_no_port_on_every_interface_without_authentication(compose):
    services = compose["services"]
    for name, service in services.items():
        for host_ip, _, container_port in _published(service):
            if (name, container_port) in OPEN_BY_DESIGN:
                continue
            assert host_ip == "127.0.0.1", (
                f"service {name}: port {container_port} published on {host_ip or 'every interface (0.0.0.0)'}; "
                "bind it to 127.0.0.1 (and reach it through an authenticating proxy)")
    # The loopback ports still ask for credentials: MLflow's basic-auth app, Prefect's API auth.
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--app-name basic-auth" in mlflow_cmd
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    assert "./mlflow/basic_auth.ini:/etc/mlflow/basic_auth.ini:ro" in services["mlflow"]["volumes"]
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= env.keys()
    assert "PREFECT_SERVER_API_AUTH_STRING" in services["prefect-server"]["environment"]
    # The one open port: MinIO's S3 API, with no anonymous access anywhere.
    setup = (INFRA / "minio" / "setup.sh").read_text()
    assert "anonymous" not in setup and "public" not in setup.lower()


def test_basic_auth_config_has_no_password_and_a_persistent_store(compose):
    import configparser

    config = configparser.ConfigParser()
    config.read(INFRA / "mlflow" / "basic_auth.ini")
    section = config["mlflow"]
    assert "admin_password" not in section, "the admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD only"
    assert section["default_permission"] in ("READ", "NO_PERMISSIONS")
    store = section["database_uri"]
    assert store.startswith("sqlite:////mlflow-auth/")
    assert "mlflow-auth:/mlflow-auth" in compose["services"]["mlflow"]["volumes"]
    assert "mlflow-auth" in compose["volumes"]
    dockerfile = (INFRA / "docker" / "mlflow.Dockerfile").read_text()
    assert "Flask-WTF" in dockerfile and "/mlflow-auth" in dockerfile


# --------------------------------------------------------------------------- who holds which credential


def test_each_compose_service_gets_its_own_credentials(compose):
    services = compose["services"]
    for name, service in services.items():
        env = service.get("environment", {})
        if name not in ("minio", "create-buckets"):
            assert not {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & env.keys(), f"{name} holds MinIO's root user"
            assert "${MINIO_ROOT" not in json.dumps(env), f"{name} holds MinIO's root user"
    assert services["mlflow"]["environment"]["AWS_ACCESS_KEY_ID"] == "mlflow"
    worker = services["prefect-worker"]["environment"]
    assert worker["AWS_ACCESS_KEY_ID"] == "publisher"
    assert worker["MLFLOW_TRACKING_USERNAME"] == "motops-worker"
    assert "MLFLOW_TRACKING_PASSWORD" in worker and "PREFECT_API_AUTH_STRING" in worker
    users = services["mlflow-users"]
    assert users["command"][-1] == "motops-worker" and "create_user.py" in " ".join(users["command"])
    assert services["prefect-worker"]["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully"


def test_only_the_publisher_holds_the_signing_key(compose, k8s):
    services = compose["services"]
    holders = {name for name, s in services.items() if s.get("secrets")}
    assert holders == {"prefect-worker"}, f"services given secrets: {holders}"
    for name, service in services.items():
        mounts = " ".join(str(v) for v in service.get("volumes", []))
        if name != "prefect-worker":
            assert "secrets" not in mounts and ".pem" not in mounts, f"{name} mounts key material: {mounts}"
    # The worker's checkout of the repository is mounted without this stack's secrets folder and .env.
    worker_mounts = services["prefect-worker"]["volumes"]
    assert {"type": "tmpfs", "target": "/workspace/motops/infra/secrets"} in worker_mounts
    assert "/dev/null:/workspace/motops/infra/.env:ro" in worker_mounts

    for (kind, name), obj in k8s.items():
        if kind not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        signing = [v for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == "motops-fleet-signing"]
        assert bool(signing) == (name == "prefect-worker"), f"{kind}/{name}: signing key mounted: {bool(signing)}"
        for container in pod["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert ("MOTOPS_SIGNING_KEY" in names) == (name == "prefect-worker"), f"{kind}/{name}"


# --------------------------------------------------------------------------- MinIO policies


def _allowed(policy: dict, action: str, resource: str) -> bool:
    """IAM evaluation for the policies here: Allow statements, wildcards in actions and resources."""
    allowed = False
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement, "extend _allowed first"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
                fnmatch.fnmatchcase(resource, r) for r in resources):
            allowed = True
    return allowed


def _policy(name: str) -> dict:
    return json.loads((INFRA / "minio" / f"{name}.json").read_text())


OBJECT_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl",
                 "s3:AbortMultipartUpload", "s3:PutBucketPolicy", "s3:DeleteBucket", "s3:PutLifecycleConfiguration")


def test_device_policy_reads_the_fleet_bucket_and_nothing_else():
    device = _policy("fleet-read")
    release = "arn:aws:s3:::motops-fleet/engines/motops-tracker/4/detector.onnx"
    metadata = "arn:aws:s3:::motops-fleet/engines/tuf/stable/timestamp.json"
    assert _allowed(device, "s3:GetObject", release) and _allowed(device, "s3:GetObject", metadata)
    # A missing N+1.root.json must answer 404 (TUF's root probe), which S3 gives only with ListBucket.
    assert _allowed(device, "s3:ListBucket", "arn:aws:s3:::motops-fleet")
    for action in OBJECT_WRITES:
        for resource in (release, metadata, "arn:aws:s3:::motops-fleet", "arn:aws:s3:::motops-fleet/x"):
            assert not _allowed(device, action, resource), f"device may {action} {resource}"
    for other in ("arn:aws:s3:::mlflow/0/model.onnx", "arn:aws:s3:::dvc/files/md5/ab/cd",
                  "arn:aws:s3:::motops-fleet/other/x", "arn:aws:s3:::motops-fleet-2/engines/x"):
        assert not _allowed(device, "s3:GetObject", other), f"device may read {other}"
    for statement in device["Statement"]:
        for action in statement["Action"]:
            assert action.startswith(("s3:Get", "s3:List")), f"fleet-read grants {action}"


def test_publisher_writes_the_fleet_bucket_but_deletes_nothing():
    publisher = _policy("fleet-publish")
    key = "arn:aws:s3:::motops-fleet/engines/motops-tracker/5/manifest.json"
    for action in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"):
        assert _allowed(publisher, action, key), action
    assert _allowed(publisher, "s3:ListBucket", "arn:aws:s3:::motops-fleet")  # head_bucket, 404s
    assert not _allowed(publisher, "s3:DeleteObject", key)  # releases are immutable
    assert not _allowed(publisher, "s3:PutObject", "arn:aws:s3:::mlflow/x")
    mlflow = _policy("mlflow-artifacts")
    assert _allowed(mlflow, "s3:PutObject", "arn:aws:s3:::mlflow/1/abc/artifacts/x")
    assert not _allowed(mlflow, "s3:GetObject", key) and not _allowed(mlflow, "s3:PutObject", key)
    dvc = _policy("dvc-readwrite")
    assert _allowed(dvc, "s3:PutObject", "arn:aws:s3:::dvc/files/md5/ab/cd")
    assert not _allowed(dvc, "s3:PutObject", key)


def test_policies_enforced_by_an_iam_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same JSON documents attached to IAM users in moto, with moto's IAM enforcement on."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws
    from moto.core.authorization import enable_iam_authentication

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "setup")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "setup")
    root_key = "engines/tuf/stable/1.root.json"
    with mock_aws():
        admin = boto3.client("s3", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        for bucket in ("motops-fleet", "mlflow", "dvc"):
            admin.create_bucket(Bucket=bucket)
        admin.put_object(Bucket="motops-fleet", Key=root_key, Body=b"{}")
        admin.put_object(Bucket="mlflow", Key="0/run/artifacts/model.onnx", Body=b"m")
        clients = {}
        for user, policies in (("device", ["fleet-read"]), ("publisher", ["fleet-publish", "dvc-readwrite"])):
            iam.create_user(UserName=user)
            for policy in policies:
                arn = iam.create_policy(PolicyName=policy, PolicyDocument=json.dumps(_policy(policy)))["Policy"]["Arn"]
                iam.attach_user_policy(UserName=user, PolicyArn=arn)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            clients[user] = boto3.client("s3", region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                                         aws_secret_access_key=key["SecretAccessKey"])

        def denied(call, **kwargs) -> bool:
            try:
                call(**kwargs)
            except ClientError as exc:
                return exc.response["Error"]["Code"] in ("AccessDenied", "403")
            return False

        with enable_iam_authentication():
            device, publisher = clients["device"], clients["publisher"]
            assert device.get_object(Bucket="motops-fleet", Key=root_key)["Body"].read() == b"{}"
            with pytest.raises(ClientError) as missing:  # the TUF root probe sees "not found", not "denied"
                device.get_object(Bucket="motops-fleet", Key="engines/tuf/stable/2.root.json")
            assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
            assert denied(device.put_object, Bucket="motops-fleet", Key="engines/tuf/stable/2.root.json", Body=b"x")
            assert denied(device.delete_object, Bucket="motops-fleet", Key=root_key)
            assert denied(device.get_object, Bucket="mlflow", Key="0/run/artifacts/model.onnx")
            assert denied(device.put_object, Bucket="dvc", Key="x", Body=b"x")

            # (HeadBucket needs s3:ListBucket on AWS and MinIO; moto checks a made-up s3:HeadBucket, so list.)
            publisher.list_objects_v2(Bucket="motops-fleet", Prefix="engines/")
            device.list_objects_v2(Bucket="motops-fleet", Prefix="engines/")
            publisher.put_object(Bucket="motops-fleet", Key="engines/motops-tracker/5/manifest.json", Body=b"{}")
            publisher.put_object(Bucket="dvc", Key="files/md5/ab/cdef", Body=b"d")
            assert denied(publisher.delete_object, Bucket="motops-fleet", Key=root_key)
            assert denied(publisher.get_object, Bucket="mlflow", Key="0/run/artifacts/model.onnx")
            assert denied(publisher.put_object, Bucket="motops-fleet", Key="elsewhere/x", Body=b"x")


def test_setup_script_gives_each_user_its_policies(compose):
    setup = (INFRA / "minio" / "setup.sh").read_text()
    users = {}
    for line in setup.splitlines():
        if line.startswith("user "):
            name, secret, *policies = shlex.split(line)[1:]
            users[name] = (secret, policies)
    assert users == {
        "mlflow": ("$MINIO_MLFLOW_PASSWORD", ["mlflow-artifacts"]),
        "publisher": ("$MINIO_PUBLISHER_PASSWORD", ["fleet-publish", "dvc-readwrite"]),
        "device": ("$MINIO_DEVICE_PASSWORD", ["fleet-read"]),
    }
    created = setup.split("for policy in", 1)[1].splitlines()[0].split("; do")[0].split()
    for name in {p for _, policies in users.values() for p in policies}:
        assert (INFRA / "minio" / f"{name}.json").is_file() and name in created, name
    job = compose["services"]["create-buckets"]
    assert job["entrypoint"] == ["/bin/sh", "/minio/setup.sh"] and "./minio:/minio:ro" in job["volumes"]
    for var in ("MINIO_MLFLOW_PASSWORD", "MINIO_PUBLISHER_PASSWORD", "MINIO_DEVICE_PASSWORD"):
        assert var in job["environment"] and f"${{{var}:?" in setup
    result = subprocess.run(["sh", "-n", str(INFRA / "minio" / "setup.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The device's env file names that user and carries no secret.
    device_env = (INFRA / "systemd" / "edge.env.example").read_text()
    assert "AWS_ACCESS_KEY_ID=device" in device_env and re.search(r"^AWS_SECRET_ACCESS_KEY=$", device_env, re.M)


# --------------------------------------------------------------------------- Kubernetes


def _secret_env(container: dict) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_kubernetes_services_ask_for_credentials(k8s):
    for (kind, name), obj in k8s.items():
        if kind == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service/{name} is exposed outside the cluster"
        if kind in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]):
                        assert "valueFrom" in env and "value" not in env, (
                            f"{kind}/{name}: {env['name']} is a literal; take it from a Secret")

    (mlflow,) = k8s[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    assert "--app-name basic-auth" in " ".join(mlflow["args"])
    secrets = _secret_env(mlflow)
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"][0] == "motops-mlflow-auth"
    assert secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"][0] == "motops-mlflow-auth"
    assert {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/etc/mlflow-auth/basic_auth.ini"} in mlflow["env"]
    assert {next(iter(r.values()))["name"] for r in mlflow["envFrom"]} == {"motops-config", "motops-s3-mlflow"}

    for kind, name, s3 in (("Deployment", "prefect-worker", "motops-s3"), ("Job", "motops-retrain", "motops-s3-train")):
        (container,) = k8s[(kind, name)]["spec"]["template"]["spec"]["containers"]
        secrets = _secret_env(container)
        assert secrets["MLFLOW_TRACKING_USERNAME"][0] == "motops-mlflow-client"
        assert secrets["MLFLOW_TRACKING_PASSWORD"][0] == "motops-mlflow-client"
        assert secrets["PREFECT_API_AUTH_STRING"] == ("motops-prefect-auth", "auth-string")
        assert s3 in {next(iter(r.values()))["name"] for r in container["envFrom"]}


def _secret_refs(node) -> set[str]:
    """Names of the Secrets a Kubernetes object reads (secretKeyRef, secretRef, secret volumes)."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretKeyRef", "secretRef") and isinstance(value, dict):
                found.add(value["name"])
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                found.add(value["secretName"])
            else:
                found |= _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _secret_refs(value)
    return found


def test_kubernetes_secret_template_has_every_secret_and_no_value(k8s):
    templates = {d["metadata"]["name"]: d for d in yaml_docs(INFRA / "k8s" / "secret.example.yaml")}
    referenced = set().union(*(_secret_refs(obj) for (kind, _), obj in k8s.items() if kind != "Secret"))
    assert {"motops-mlflow-auth", "motops-mlflow-client", "motops-prefect-auth", "motops-fleet-signing"} <= referenced
    assert referenced <= templates.keys(), f"Secrets read but not in the template: {referenced - templates.keys()}"
    for name, secret in templates.items():
        for key, value in secret["stringData"].items():
            if SECRET_NAME.search(key) or key.endswith(".pem") or key == "MLFLOW_BACKEND_STORE_URI":
                assert value == "", f"secret.example.yaml: {name}.{key} has a value"


# --------------------------------------------------------------------------- registry against basic auth


def test_redact_uri_hides_passwords_only():
    from motops.registry.mlflow_registry import redact_uri

    assert redact_uri("http://alice:s3cret@mlflow:5000") == "http://alice:***@mlflow:5000"
    assert redact_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert "s3cret" not in redact_uri("postgresql://u:s3cret@db/mlflow")


@pytest.mark.parametrize(("status", "user", "expected"), [
    (401, None, "it needs credentials (401) and none are set; set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD"),
    (401, "alice", "wrong credentials for user 'alice' (401); check MLFLOW_TRACKING_USERNAME and "
                   "MLFLOW_TRACKING_PASSWORD"),
    (403, "alice", "user 'alice' lacks the permission (403)"),
])
def test_refusals_become_one_line_without_the_password(
        monkeypatch: pytest.MonkeyPatch, status: int, user: str | None, expected: str) -> None:
    """The translation alone (no server): MLflow's exception for a 401/403, raised inside ``show``."""
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED

    from motops.config import RegistryParams
    from motops.registry import mlflow_registry as reg

    class Refusing:
        def get_registered_model(self, name):
            code = UNAUTHENTICATED if status == 401 else PERMISSION_DENIED
            raise MlflowException(f"API request failed with error code {status} != 200", error_code=code)

    _as(monkeypatch, user, "pa55-never-shown")
    monkeypatch.setattr(reg, "_client", lambda params, root: (Refusing(), params.tracking_uri))
    params = RegistryParams(tracking_uri="http://bob:pa55-in-uri@mlflow.example:5000", model_name="m")
    with pytest.raises(reg.RegistryAuthError) as refused:
        reg.show(params)
    message = str(refused.value)
    assert refused.value.status == status and expected in message and "\n" not in message
    assert message.startswith("MLflow at http://bob:***@mlflow.example:5000 refused to read the registered model")
    assert "pa55" not in message

    # An artifact transfer through the server's proxy fails with requests' HTTPError: the same line.
    response = requests.Response()
    response.status_code = status

    class RefusingDownload(Refusing):
        def get_registered_model(self, name):
            raise requests.HTTPError("refused", response=response)

    monkeypatch.setattr(reg, "_client", lambda params, root: (RefusingDownload(), params.tracking_uri))
    with pytest.raises(reg.RegistryAuthError, match=re.escape(expected)):
        reg.show(params)
    # Anything else is not dressed up as a refusal.
    response.status_code = 500
    with pytest.raises(requests.HTTPError):
        reg.show(params)


ADMIN_PASSWORD = "adm1n-Pa55word-for-tests"
WORKER_PASSWORD = "w0rker-Pa55word-for-tests"
VIEWER_PASSWORD = "v1ewer-Pa55word-for-tests"


@pytest.fixture(scope="module")
def _auth_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server --app-name basic-auth`` on 127.0.0.1 (SQLite stores), starting in the background."""
    folder = tmp_path_factory.mktemp("mlflow-auth")
    (folder / "basic_auth.ini").write_text(
        (INFRA / "mlflow" / "basic_auth.ini").read_text().replace(
            "sqlite:////mlflow-auth/basic_auth.db", f"sqlite:///{folder / 'basic_auth.db'}"))
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key"}
    with mlflow_server(folder, "--app-name", "basic-auth", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def _bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import write_tiny_bundle

    folder = tmp_path_factory.mktemp("auth-bundle")
    return write_tiny_bundle(folder / "a", "1", models_dir=folder / "models")


@pytest.fixture(scope="module")
def auth_url(_auth_server: SimpleNamespace, _bundle: Path) -> str:
    """The server's URL once ``/health`` answers (the bundle is built while it starts)."""
    return wait_healthy(_auth_server, HEALTH_TIMEOUT_S)


def _as(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _create_user(monkeypatch: pytest.MonkeyPatch, url: str, user: str, password: str) -> int:
    """infra/mlflow/create_user.py, run as compose's mlflow-users job runs it (as the admin)."""
    import runpy

    _as(monkeypatch, "admin", ADMIN_PASSWORD)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MOTOPS_NEW_USER_PASSWORD", password)
    main = runpy.run_path(str(INFRA / "mlflow" / "create_user.py"))["main"]
    try:
        return main([user])
    finally:
        monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.mark.slow
def test_registry_refuses_missing_and_wrong_credentials_in_one_line(
        auth_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from typer.testing import CliRunner

    from motops.cli import app
    from motops.config import RegistryParams
    from motops.registry.mlflow_registry import RegistryAuthError, show

    params = RegistryParams(tracking_uri=auth_url, experiment="auth", model_name="auth-model")
    _as(monkeypatch, None, None)
    with pytest.raises(RegistryAuthError) as missing:
        show(params)
    assert missing.value.status == 401
    message = str(missing.value)
    assert message.startswith(f"MLflow at {auth_url} refused to read the registered model")
    assert "none are set" in message and "MLFLOW_TRACKING_USERNAME" in message and "\n" not in message

    _as(monkeypatch, "admin", "not-the-password")
    with pytest.raises(RegistryAuthError) as wrong:
        show(params)
    assert wrong.value.status == 401
    assert "wrong credentials for user 'admin' (401)" in str(wrong.value)
    assert "not-the-password" not in str(wrong.value) and "\n" not in str(wrong.value)

    # The command line: exit 2, one line on stderr, no traceback, no password.
    result = CliRunner().invoke(app, ["registry", "show", "-p", str(ROOT / "params.yaml"),
                                      "-S", f"registry.tracking_uri={auth_url}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MLflow at ") and "401" in lines[0], result.output
    assert "Traceback" not in result.output and "not-the-password" not in result.output

    # The admin's bootstrap password is the only way in for the admin; the right one works.
    _as(monkeypatch, "admin", ADMIN_PASSWORD)
    assert show(params)["exists"] is False


@pytest.mark.slow
def test_right_credentials_register_read_and_promote_and_a_reader_cannot(
        auth_url: str, _bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from motops.config import GatesParams, RegistryParams
    from motops.registry.gates import evaluate_gate
    from motops.registry.mlflow_registry import RegistryAuthError, promote, register, show

    assert _create_user(monkeypatch, auth_url, "motops-worker", WORKER_PASSWORD) == 0
    assert _create_user(monkeypatch, auth_url, "motops-worker", WORKER_PASSWORD) == 0  # idempotent: re-keys
    assert _create_user(monkeypatch, auth_url, "viewer", VIEWER_PASSWORD) == 0

    gates = GatesParams(idf1_min=0.5, hota_min=None, fps_min={"onnxruntime": 5.0}, max_regression=0.02)
    metrics = {"hota": 0.6, "mota": 0.55, "idf1": 0.7, "idsw": 4, "frag": 3, "fps": 20.0, "backend": "onnxruntime"}
    params = RegistryParams(tracking_uri=auth_url, experiment="auth-register", model_name="auth-tracker")

    # The worker's user (as compose and k8s give it) registers: it owns what it creates.
    _as(monkeypatch, "motops-worker", WORKER_PASSWORD)
    gate = evaluate_gate(metrics, gates, backend="onnxruntime", champion=None)
    result = register(_bundle, gate=gate, metrics=metrics, params=params, params_flat={}, plots=[], lineage={})
    assert result["created"] is True and result["version"] == "1" and result["aliases"] == ["challenger"]
    assert show(params)["aliases"] == {"challenger": "1"}

    # A signed-in user without a grant reads (default_permission READ) but may not move an alias.
    _as(monkeypatch, "viewer", VIEWER_PASSWORD)
    assert show(params)["aliases"] == {"challenger": "1"}
    with pytest.raises(RegistryAuthError) as refused:
        promote(params, gates, backend="onnxruntime")
    assert refused.value.status == 403
    assert "user 'viewer' lacks the permission (403)" in str(refused.value) and "\n" not in str(refused.value)
    assert show(params)["aliases"] == {"challenger": "1"}  # nothing moved

    # ... and a wrong password for a real user is refused the same way as for the admin.
    _as(monkeypatch, "motops-worker", VIEWER_PASSWORD)
    with pytest.raises(RegistryAuthError, match="wrong credentials for user 'motops-worker'"):
        show(params)

    # The admin grants the reader MANAGE on the model (infra/README.md's command): now it may promote.
    # (Not EDIT: promotion removes the challenger alias, which MLflow counts as a delete.)
    _as(monkeypatch, "admin", ADMIN_PASSWORD)
    from mlflow.server import get_app_client

    get_app_client("basic-auth", tracking_uri=auth_url).grant_user_permission(
        "viewer", "registered_model", "auth-tracker", "MANAGE")
    _as(monkeypatch, "viewer", VIEWER_PASSWORD)
    promoted = promote(params, gates, backend="onnxruntime")
    assert promoted["promoted"] is True and promoted["champion"] == "1" and promoted["forced"] is False
    assert show(params)["aliases"] == {"champion": "1"}


def test_create_user_script_refuses_wrong_admin_password_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import runpy

    main = runpy.run_path(str(INFRA / "mlflow" / "create_user.py"))["main"]
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MOTOPS_NEW_USER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["someone"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: set MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD")
    assert main([]) == 2


# --------------------------------------------------------------------------- Prefect API auth


@pytest.mark.slow
def test_prefect_api_refuses_without_the_auth_string_compose_sets(compose) -> None:
    """Prefect's own API app and client with the settings compose gives the server and the worker."""
    import asyncio
    import base64

    import httpx
    import prefect.settings
    from fastapi import FastAPI
    from prefect.client.orchestration import PrefectClient
    from prefect.server.api.server import create_api_app

    server_env = compose["services"]["prefect-server"]["environment"]
    worker_env = compose["services"]["prefect-worker"]["environment"]
    (server_var,) = [k for k in server_env if "AUTH" in k]
    (worker_var,) = [k for k in worker_env if k.startswith("PREFECT_") and "AUTH" in k]
    assert server_env[server_var] == worker_env[worker_var]  # the same required variable on both sides
    server_setting, client_setting = getattr(prefect.settings, server_var), getattr(prefect.settings, worker_var)

    secret = "motops:a-long-random-password"
    with prefect.settings.temporary_settings({server_setting: secret}):
        app = FastAPI()
        app.mount("/api", create_api_app(ignore_cache=True))  # where `prefect server start` mounts it

    async def calls() -> list[int]:
        statuses = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://prefect") as http:
            for auth in (None, "motops:wrong"):
                headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
                statuses.append((await http.get("/api/hello", headers=headers)).status_code)
            statuses.append((await http.get("/api/health")).status_code)  # probes stay open (compose's healthcheck)
        with prefect.settings.temporary_settings({client_setting: secret}):
            async with PrefectClient(app, auth_string=client_setting.value()) as client:  # as get_client() does
                statuses.append((await client.hello()).status_code)
        return statuses

    assert asyncio.run(calls()) == [401, 401, 200, 200]

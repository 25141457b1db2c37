"""infra/: every compose, Kubernetes and systemd file parses and has the structure the README promises.

Nothing here is run (no Docker or cluster on this machine); the files are checked the way a
reviewer would: services present with images and ports, the GPU job asks for a GPU, the unit
starts the agent, the agent's params file loads.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import yaml

from motops.config import load_params

INFRA = Path(__file__).resolve().parents[1] / "infra"


def _env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def test_compose_has_the_stack_with_images_ports_and_dependencies(compose):
    services = compose["services"]
    assert {"postgres", "minio", "create-buckets", "mlflow", "prefect-server", "prefect-worker"} <= services.keys()
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service {name}: no image or build"
    ports = {name: [str(p) for p in s.get("ports", [])] for name, s in services.items()}
    assert any(p.endswith("5000:5000") for p in ports["mlflow"])
    assert any(p.endswith("4200:4200") for p in ports["prefect-server"])
    assert any(p.endswith("9000:9000") for p in ports["minio"])
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["prefect-server"]["image"].startswith("prefecthq/prefect:3.8.8")

    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri" in mlflow_cmd and "postgresql://" in mlflow_cmd
    assert "@postgres:5432/mlflow" in mlflow_cmd
    assert "--artifacts-destination s3://mlflow/" in mlflow_cmd
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["mlflow"]["depends_on"]["create-buckets"]["condition"] == "service_completed_successfully"

    assert services["create-buckets"]["entrypoint"] == ["/bin/sh", "/minio/setup.sh"]
    buckets = (INFRA / "minio" / "setup.sh").read_text()
    assert all(b in buckets for b in ("local/mlflow", "local/dvc", "local/motops-fleet"))
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")
    assert "CREATE DATABASE prefect" in (INFRA / "postgres" / "init.sql").read_text()

    worker = services["prefect-worker"]
    assert worker["command"][:3] == ["prefect", "worker", "start"] and "motops" in worker["command"]
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MOTOPS_FLEET_ENDPOINT_URL"] == "http://minio:9000"
    for name, service in services.items():  # every dependency is a service of this file
        deps = service.get("depends_on", {})
        assert set(deps) <= services.keys(), f"{name} depends on an unknown service"
    for build in (s["build"] for s in services.values() if "build" in s):
        dockerfile = (INFRA / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), f"missing {dockerfile}"
        assert dockerfile.read_text().startswith("#") and "FROM " in dockerfile.read_text()


def test_kubernetes_objects_mlflow_worker_and_gpu_job(k8s):
    kinds = {kind for kind, _ in k8s}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "Job", "ServiceAccount"} <= kinds
    listed = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert all((INFRA / "k8s" / f).is_file() for f in listed)
    assert "secret.example.yaml" not in listed  # a template with placeholders is never applied as is
    for (kind, name), obj in k8s.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "motops", f"{kind}/{name}"

    mlflow = k8s[("Deployment", "mlflow")]
    pod = mlflow["spec"]["template"]["spec"]
    assert mlflow["spec"]["selector"]["matchLabels"].items() <= mlflow["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert container["image"] and container["ports"][0]["containerPort"] == 5000
    args = " ".join(container["args"])
    assert "--backend-store-uri" in args and "--artifacts-destination" in args
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "motops-db"
    service = k8s[("Service", "mlflow")]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "mlflow"}
    assert service["spec"]["ports"][0]["port"] == 5000

    worker = k8s[("Deployment", "prefect-worker")]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["prefect", "worker", "start"] and "motops" in container["command"]
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {"motops-config", "motops-s3"}
    assert "MOTOPS_SIGNING_KEY" in _env_names(container)
    assert any(v.get("secret", {}).get("secretName") == "motops-fleet-signing" for v in pod["volumes"])
    assert pod["serviceAccountName"] == "prefect-worker"

    job = k8s[("Job", "motops-retrain")]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "flows/retrain.py" in container["command"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= {name for kind, name in k8s if kind == "PersistentVolumeClaim"}
    config = k8s[("ConfigMap", "motops-config")]["data"]
    assert config["MLFLOW_TRACKING_URI"].startswith("http://mlflow.motops.svc")
    assert all(isinstance(v, str) for v in config.values())  # ConfigMap values must be strings


def test_systemd_unit_runs_the_edge_agent_with_its_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((INFRA / "systemd" / "motops-edge.service").read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert Path(exec_start[0]).name == "motops" and exec_start[1:3] == ["edge", "run"]
    config = Path(exec_start[exec_start.index("-p") + 1])
    assert config.name == "edge.yaml"
    assert unit["Service"]["Restart"] in ("always", "on-failure")
    assert "network-online.target" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    params = load_params(INFRA / "systemd" / "edge.yaml")  # the agent's params file is a valid params file
    assert params.fleet.install_dir == "/var/lib/motops-edge"
    assert params.fleet.public_key and params.fleet.signing_key is None  # devices never hold the signing key
    assert unit["Service"]["ReadWritePaths"] == params.fleet.install_dir
    assert unit["Service"]["StateDirectory"] == Path(params.fleet.install_dir).name


def test_readme_names_every_infra_file():
    readme = (INFRA / "README.md").read_text()
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.name not in ("README.md", ".gitignore")]
    for path in files:
        rel = path.relative_to(INFRA).as_posix()
        if path.parent.name == "k8s" and path.name not in ("kustomization.yaml", "secret.example.yaml"):
            continue  # the manifests are described together under k8s/
        assert rel in readme or path.name in readme, f"infra/README.md does not mention {rel}"

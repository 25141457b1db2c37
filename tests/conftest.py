"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# No telemetry, no downloads, from any library the tests import.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

TINY = {
    "data.synthetic.sequences": 2,
    "data.synthetic.frames": 24,
    "data.synthetic.width": 320,
    "data.synthetic.height": 192,
}


def run_command(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _set(params: dict, dotted: str, value) -> None:
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.fixture()
def project(tmp_path) -> Path:
    """A git + DVC copy of the project with tiny synthetic footage and a local remote."""
    dst = tmp_path / "project"
    dst.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "stages", "src", "data/raw"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.dvc", ".gitignore"))
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_command(["git", "init", "-q"], dst)
    run_command(["git", "config", "user.email", "ci@example.invalid"], dst)
    run_command(["git", "config", "user.name", "ci"], dst)
    run_command(["dvc", "init", "-q"], dst)
    run_command(["dvc", "config", "core.analytics", "false"], dst)
    run_command(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], dst)
    run_command(["git", "add", "-A"], dst)
    run_command(["git", "commit", "-qm", "copy"], dst)
    return dst


@pytest.fixture()
def sh():
    """Run a command with the venv's tools first on PATH; fail the test with its output unless asked not to."""
    return run_command


# --------------------------------------------------------------------------- infra/ files, parsed

INFRA = ROOT / "infra"


@pytest.fixture(scope="module")
def compose() -> dict:
    """infra/compose.yaml, parsed (variables not interpolated)."""
    from helpers import yaml_docs

    (doc,) = yaml_docs(INFRA / "compose.yaml")
    return doc


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    """Every Kubernetes object under infra/k8s by (kind, name)."""
    from helpers import yaml_docs

    objects = {}
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml_docs(path):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: not a Kubernetes object: {doc}"
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{path}: {key} defined twice"
            objects[key] = {**doc, "_file": path.name}
    return objects

"""The DVC stages on a copy of the project: repro, push/pull, and a bad source stopping the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "data.synthetic.sequences": 2,
    "data.synthetic.frames": 24,
    "data.synthetic.width": 320,
    "data.synthetic.height": 192,
}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
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
    _run(["git", "init", "-q"], dst)
    _run(["git", "config", "user.email", "ci@example.invalid"], dst)
    _run(["git", "config", "user.name", "ci"], dst)
    _run(["dvc", "init", "-q"], dst)
    _run(["dvc", "config", "core.analytics", "false"], dst)
    _run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "copy"], dst)
    return dst


def test_repro_validate_then_push_pull_and_no_op_rerun(project):
    _run(["dvc", "repro", "validate"], project)
    sequences = sorted((project / "data/sequences").iterdir())
    assert len(sequences) == 2
    assert (project / "data/annotations.parquet").is_file()
    assert (project / "reports/validation/data_docs/index.html").is_file()
    metrics = _run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "success" in metrics

    again = _run(["dvc", "repro", "validate"], project)
    assert "didn't change" in again.stdout or "is cached" in again.stdout or "up to date" in again.stdout.lower()

    _run(["dvc", "push"], project)
    shutil.rmtree(project / "data/sequences")
    shutil.rmtree(project / ".dvc/cache")
    _run(["dvc", "pull"], project)
    assert sorted((project / "data/sequences").iterdir()) == sequences
    assert _run(["dvc", "status"], project).stdout.strip().endswith("Data and pipelines are up to date.")


def test_bad_user_annotations_stop_the_run_before_anything_downstream(project):
    """A user source with a duplicate id in one frame: validate fails naming the line; nothing after it ran."""
    _run([sys.executable, "-m", "motops.cli", "synth", str(project / "data/raw/cam"), "--sequences", "1",
          "--frames", "12", "--width", "320", "--height", "192", "--seed", "7"], project)
    seq = next(p for p in (project / "data/raw/cam").iterdir() if p.is_dir())
    renamed = seq.with_name("cam-01")
    seq.rename(renamed)
    ini = renamed / "seqinfo.ini"
    ini.write_text(ini.read_text().replace(f"name={seq.name}", "name=cam-01"))
    gt = renamed / "gt" / "gt.txt"
    lines = gt.read_text().splitlines()
    lines.append(lines[0])  # the same id twice in one frame
    gt.write_text("\n".join(lines) + "\n")
    _run(["dvc", "add", "data/raw/cam"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["sources"] = ["synthetic", {"format": "mot", "path": "data/raw/cam"}]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = _run(["dvc", "repro", "validate"], project, check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"gt.txt:{len(lines)}" in out
    assert not (project / "dvc.lock").exists() or "validate" not in (project / "dvc.lock").read_text()

"""The DVC stages on a copy of the project: repro, push/pull, and a bad source stopping the run."""

from __future__ import annotations

import shutil
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_repro_validate_then_push_pull_and_no_op_rerun(project, sh):
    sh(["dvc", "repro", "validate"], project)
    sequences = sorted((project / "data/sequences").iterdir())
    assert len(sequences) == 2
    assert (project / "data/annotations.parquet").is_file()
    assert (project / "reports/validation/data_docs/index.html").is_file()
    metrics = sh(["dvc", "metrics", "show", "--json"], project).stdout
    assert "success" in metrics
    report = sh([sys.executable, "-m", "motops.cli", "report"], project).stdout
    assert "2 sequences" in report and "validation:  passed" in report and "data_docs/index.html" in report

    again = sh(["dvc", "repro", "validate"], project)
    assert "didn't change" in again.stdout or "is cached" in again.stdout or "up to date" in again.stdout.lower()

    sh(["dvc", "push", "--with-deps", "validate"], project)
    shutil.rmtree(project / "data/sequences")
    shutil.rmtree(project / ".dvc/cache")
    sh(["dvc", "pull", "--with-deps", "validate"], project)
    assert sorted((project / "data/sequences").iterdir()) == sequences
    assert sh(["dvc", "status", "validate"], project).stdout.strip().endswith("Data and pipelines are up to date.")


def test_bad_user_annotations_stop_the_run_before_anything_downstream(project, sh):
    """A user source with a duplicate id in one frame: validate fails naming the line; nothing after it ran."""
    sh([sys.executable, "-m", "motops.cli", "synth", str(project / "data/raw/cam"), "--sequences", "1",
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
    sh(["dvc", "add", "data/raw/cam"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["sources"] = ["synthetic", {"format": "mot", "path": "data/raw/cam"}]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = sh(["dvc", "repro", "validate"], project, check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"gt.txt:{len(lines)}" in out
    assert not (project / "dvc.lock").exists() or "validate" not in (project / "dvc.lock").read_text()

"""New footage in the inbox: found once, checked before it is versioned, listed in data.sources."""

from __future__ import annotations

import sys

import pytest
import yaml

from motops.data.inbox import add_source, admit_batch, find_new_batches
from motops.errors import DataFormatError


def _footage(sh, project, folder, seed=3):
    sh([sys.executable, "-m", "motops.cli", "synth", str(folder), "--sequences", "1", "--frames", "12",
        "--width", "320", "--height", "192", "--seed", str(seed)], project)
    return folder


def test_new_batch_is_admitted_once_and_listed(project, sh):
    inbox = project / "data" / "inbox"
    _footage(sh, project, inbox / "week-47")
    (inbox / "README.txt").write_text("not footage")

    batches = find_new_batches(str(inbox), project / "data" / "raw")
    assert [(b.name, b.format) for b in batches] == [("week-47", "mot")]

    admitted = admit_batch(batches[0], project, dvc=str(__import__("pathlib").Path(sys.executable).parent / "dvc"))
    assert admitted["path"] == "data/raw/week-47" and admitted["sequences"] == 1
    assert (project / "data/raw/week-47.dvc").is_file()
    assert "/week-47" in (project / "data/raw/.gitignore").read_text()
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert {"format": "mot", "path": "data/raw/week-47"} in params["data"]["sources"]

    assert find_new_batches(str(inbox), project / "data" / "raw") == []


def test_malformed_batch_is_refused_and_leaves_nothing(project, sh):
    inbox = project / "data" / "inbox"
    seq = next(p for p in _footage(sh, project, inbox / "bad").iterdir() if p.is_dir())
    gt = seq / "gt" / "gt.txt"
    lines = gt.read_text().splitlines()
    lines[4] = "1,2,three,4,5,6,1,1,1"
    gt.write_text("\n".join(lines) + "\n")
    before = (project / "params.yaml").read_text()

    batch = find_new_batches(str(inbox), project / "data" / "raw")[0]
    with pytest.raises(DataFormatError, match=r"gt\.txt:5"):
        admit_batch(batch, project)
    assert not (project / "data/raw/bad").exists() and not (project / "data/raw/bad.dvc").exists()
    assert (project / "params.yaml").read_text() == before


def test_add_source_keeps_comments_and_is_idempotent(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# top comment\ndata:\n  sources: [synthetic]   # where footage comes from\n  raw_dir: data/raw\n")
    assert add_source(path, {"format": "mot", "path": "data/raw/a"}) is True
    assert add_source(path, {"format": "mot", "path": "data/raw/a"}) is False
    text = path.read_text()
    assert "# top comment" in text and "# where footage comes from" in text
    assert yaml.safe_load(text)["data"]["sources"] == ["synthetic", {"format": "mot", "path": "data/raw/a"}]

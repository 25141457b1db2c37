"""The `motops` command: help everywhere, synth -> validate, clear failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from motops.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_every_subcommand_has_help():
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    names = ["synth", "ingest", "validate", "track", "report", "params"]
    commands = [name for name in names if name in top.output]
    assert commands == names
    for name in commands:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_params_command_refuses_a_typo(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ok = runner.invoke(app, ["params", "-S", "reid.epochs=2"])
    assert ok.exit_code == 0 and "epochs: 2" in ok.output
    bad = runner.invoke(app, ["params", "-S", "reid.epoks=2"])
    assert bad.exit_code == 2
    assert "did you mean 'reid.epochs'" in bad.output


def test_synth_options_out_of_range_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["synth", str(tmp_path / "s"), "--frames", "1"])
    assert result.exit_code == 2
    assert "frames" in result.output and "greater than or equal to 2" in result.output
    result = runner.invoke(app, ["synth", str(tmp_path / "s"), "--camera", "orbit"])
    assert result.exit_code == 2 and "camera" in result.output
    assert not (tmp_path / "s").exists()


def _motops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "motops.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_synth_then_validate_passes_and_a_corrupt_line_is_named(tmp_path):
    """The acceptance walk: synth 2 sequences, validate passes, corrupt one gt line, validate fails on it."""
    out = tmp_path / "s"
    made = _motops("synth", str(out), "--sequences", "2", "--frames", "60", cwd=ROOT)
    assert made.returncode == 0, made.stderr
    seqs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(seqs) == 2
    for seq in seqs:
        assert (seq / "seqinfo.ini").is_file()
        assert len(list((seq / "img1").glob("*.jpg"))) == 60
    ok = _motops("validate", str(out), "--report-dir", str(tmp_path / "report"), cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()

    gt = seqs[1] / "gt" / "gt.txt"
    lines = gt.read_text().splitlines()
    fields = lines[6].split(",")
    fields[4] = "-12"  # a negative width
    lines[6] = ",".join(fields)
    gt.write_text("\n".join(lines) + "\n")
    bad = _motops("validate", str(out), "--report-dir", str(tmp_path / "report2"), cwd=ROOT)
    assert bad.returncode == 1
    assert f"{gt}:7" in bad.stderr
    assert "width" in bad.stderr

    lines[6] = "1,2,3"  # too few columns: refused by the reader, exit 2
    gt.write_text("\n".join(lines) + "\n")
    refused = _motops("validate", str(out), "--report-dir", str(tmp_path / "report3"), cwd=ROOT)
    assert refused.returncode == 2
    assert f"{gt}:7" in refused.stderr


def test_track_refuses_a_missing_model_and_a_bad_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    missing = runner.invoke(app, ["track", str(tmp_path), "--detector", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2 and "nope.onnx" in missing.output
    bad = runner.invoke(app, ["track", str(tmp_path), "--detector", str(tmp_path / "x.pt"), "--tracker", "sort"])
    assert bad.exit_code == 2 and "bytetrack" in bad.output


@pytest.mark.slow
def test_track_a_synthetic_video_end_to_end(tmp_path):
    """motops track on an .mp4 with a (random-weight) YOLOv8n: MOT results, annotated video, speed summary."""
    import json

    import cv2
    from ultralytics import YOLO

    made = _motops("synth", str(tmp_path / "s"), "--sequences", "1", "--frames", "12", "--width", "320",
                   "--height", "192", "--video", cwd=ROOT)
    assert made.returncode == 0, made.stderr
    weights = tmp_path / "det.pt"
    YOLO("yolov8n.yaml").save(weights)
    out = tmp_path / "run"
    result = _motops("track", str(tmp_path / "s" / "synth-01.mp4"), "--detector", str(weights), "--imgsz", "160",
                     "--out", str(out), "-S", "track.tracker=bytetrack", "--detect-every", "2", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["detect_every"] == 2
    assert summary["fps"] > 0 and {"decode", "detect", "associate"} <= set(summary["latency_ms"])
    assert (out / "tracks.txt").exists()
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_report_without_a_run_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 1 and "make pipeline" in result.output

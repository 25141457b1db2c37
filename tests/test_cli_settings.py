"""No silent overrides: every `motops track` / `motops evaluate` option and `-S` key takes effect or is refused.

The engines are tiny real bundles (160 x 160 YOLOv8n ONNX, 32-d ReID ONNX; see ``helpers``),
tracked on a 10-frame synthetic sequence; a refusal is one line, exit code 2, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers import write_tiny_bundle
from typer.testing import CliRunner

from motops.cli import app

runner = CliRunner()
FRAMES = 10


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three bundles (ReID on / ReID model but with_reid false / no ReID model), the models, footage, params."""
    from motops.config import SyntheticParams
    from motops.data.synthetic import synthesize
    from motops.export.bundle import rewrite_bundle, write_bundle

    root = tmp_path_factory.mktemp("settings")
    models = root / "models"
    reid_on = write_tiny_bundle(root / "engine-reid", "1", models_dir=models)  # botsort, with_reid true, every 2nd
    motion = rewrite_bundle(reid_on, root / "engine-motion",
                            tracker={"tracker": "botsort", "with_reid": False, "conf": 0.1, "classes": None,
                                     "detect_every": 2})
    no_reid = write_bundle(
        root / "engine-noreid", files={"detector": models / "det.onnx"},
        tracker={"tracker": "botsort", "with_reid": False, "conf": 0.1, "classes": None},
        model_version="1", input_shapes={"detector": [1, 3, 160, 160]},
        class_names={i: f"class{i}" for i in range(80)}, metrics={},
        backends={"onnxruntime": {"built": True, "reason": None}},
    )
    # A seed on which the untrained tiny detector gives boxes confident enough to start tracks (and so
    # to call the ReID); the domain-randomized footage of issue 17 moved it from 5 to 1.
    seq = synthesize(root / "footage", SyntheticParams(sequences=1, frames=FRAMES, width=320, height=192, seed=1),
                     progress=False)[0]
    params = root / "params.yaml"
    params.write_text("{}\n")  # every default; the tests do not depend on the project's params.yaml
    return {"root": root, "reid_on": reid_on, "motion": motion, "no_reid": no_reid, "seq": seq, "params": params,
            "det": models / "det.onnx", "reid": models / "reid.onnx", "det_pt": models / "det.pt"}


def _track(kit: dict[str, Path], out: Path, *args: str):
    return runner.invoke(app, ["track", str(kit["seq"]), "--out", str(out), "--no-video", "-p", str(kit["params"]),
                               *args])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _refused(result, out: Path, *needles: str) -> None:
    """Exit 2, one line naming what was refused, nothing written."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()


# --------------------------------------------------------------------------- track --engine


def test_engine_with_reid_true_turns_the_bundles_appearance_on(kit: dict[str, Path], tmp_path: Path) -> None:
    default = tmp_path / "default"
    assert _track(kit, default, "--engine", str(kit["motion"])).exit_code == 0
    summary = _summary(default)
    assert summary["appearance"] is False and summary["reid_calls"] == 0
    assert summary["settings"]["with_reid"] is False
    assert summary["settings_from"]["with_reid"] == f"bundle {kit['motion']}"

    out = tmp_path / "reid"
    result = _track(kit, out, "--engine", str(kit["motion"]), "-S", "track.with_reid=true")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["appearance"] is True and summary["reid_calls"] > 0
    assert summary["settings"]["with_reid"] is True and summary["settings_from"]["with_reid"] == "user"
    assert json.loads(result.output[result.output.index("{"):])["user_settings"] == {"with_reid": True}


def test_engine_tracker_detect_every_and_track_keys_take_effect(kit: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _track(kit, out, "--engine", str(kit["reid_on"]), "--tracker", "bytetrack", "--detect-every", "3",
                    "-S", "track.track_buffer=60", "-S", "track.flow=farneback", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    settings, origin = summary["settings"], summary["settings_from"]
    assert settings["tracker"] == summary["tracker"] == "bytetrack"
    assert settings["detect_every"] == 3 and summary["detector_calls"] == 4  # frames 1, 4, 7, 10
    assert settings["track_buffer"] == 60 and settings["flow"] == "farneback"
    assert summary["appearance"] is False and summary["reid_calls"] == 0  # ByteTrack: the bundle's ReID is dropped
    assert {k for k, v in origin.items() if v == "user"} == {"tracker", "detect_every", "track_buffer", "flow"}
    assert origin["match_thresh"] == f"bundle {kit['reid_on']}"
    assert summary["backends"]["detector"] == "onnxruntime"


@pytest.mark.parametrize(
    ("bundle", "args", "needles"),
    [
        ("no_reid", ["-S", "track.with_reid=true"], ["track.with_reid=true", "has no ReID model", "re-run export"]),
        ("reid_on", ["--imgsz", "320"], ["--imgsz 320", "160x160", "fixed when it was exported"]),
        ("reid_on", ["--reid", "x.onnx"], ["--reid x.onnx", "bundle's own ReID model"]),
        ("reid_on", ["-S", "detector.epochs=3"],
         ["-S detector.epochs=3", "no effect on `motops track`, which reads only track.*"]),
        ("reid_on", ["-S", "export.engine_dir=elsewhere"], ["export.engine_dir has no effect"]),
        ("reid_on", ["-S", "track.backend=torch"], ["track.backend=torch", "no torch weights"]),
        ("reid_on", ["--backend", "torch"], ["--backend torch", "no torch weights"]),
        ("reid_on", ["--tracker", "bytetrack", "-S", "track.appearance_thresh=0.5"],
         ["track.appearance_thresh=0.5", "has no effect", "bytetrack"]),
        ("motion", ["-S", "track.proximity_thresh=0.6"], ["track.proximity_thresh=0.6", "no appearance"]),
        ("reid_on", ["--detect-every", "1", "-S", "track.flow=farneback"],
         ["track.flow=farneback", "detect_every is 1"]),
        ("reid_on", ["--tracker", "botsort", "-S", "track.tracker=bytetrack"], ["--tracker botsort contradicts"]),
        ("reid_on", ["-S", "track.track_low_thresh=0.9"], ["track_low_thresh", "track.track_low_thresh=0.9"]),
    ],
    ids=["with_reid-no-model", "imgsz", "reid-option", "other-section", "export-key", "backend-torch",
         "backend-option-torch", "appearance-on-bytetrack", "appearance-without-reid", "flow-every-frame",
         "option-vs-S", "contradicting-thresholds"],
)
def test_engine_refuses_what_cannot_take_effect(kit, tmp_path: Path, bundle: str, args: list[str],
                                                needles: list[str]) -> None:
    out = tmp_path / "run"
    _refused(_track(kit, out, "--engine", str(kit[bundle]), *args), out, *needles)


def test_engine_imgsz_equal_to_the_bundles_is_accepted(kit: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _track(kit, out, "--engine", str(kit["motion"]), "--imgsz", "160", "--max-frames", "2")
    assert result.exit_code == 0, result.output
    assert _summary(out)["imgsz"] == [160, 160]


# --------------------------------------------------------------------------- track --detector


def test_detector_with_reid_option_computes_embeddings(kit: dict[str, Path], tmp_path: Path) -> None:
    """The issue's case: --reid without -S track.with_reid=true used to compute no embedding at all."""
    out = tmp_path / "run"
    # embed all: on this clip the tiny test detector's boxes need no embedding under the default embed (needed:
    # reid_calls 0), while with all every kept box is embedded, which is what this test is about.
    result = _track(kit, out, "--detector", str(kit["det"]), "--reid", str(kit["reid"]), "-S", "track.embed=all")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["appearance"] is True and summary["reid_calls"] > 0
    assert summary["settings"]["with_reid"] is True and summary["settings_from"]["with_reid"] == "user"
    assert summary["settings_from"]["tracker"] == str(kit["params"])


def test_detector_options_and_track_keys_take_effect(kit: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _track(kit, out, "--detector", str(kit["det"]), "--tracker", "bytetrack", "--detect-every", "2",
                    "-S", "track.match_thresh=0.6", "-S", "track.flow=farneback")
    assert result.exit_code == 0, result.output
    settings = _summary(out)["settings"]
    assert (settings["tracker"], settings["detect_every"], settings["match_thresh"], settings["flow"]) == (
        "bytetrack", 2, 0.6, "farneback")
    assert _summary(out)["detector_calls"] == FRAMES // 2


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--reid", "{reid}", "-S", "track.with_reid=false"], ["contradicts -S track.with_reid=false"]),
        (["-S", "track.with_reid=true"], ["track.with_reid=true", "no ReID model was given", "--reid MODEL"]),
        (["--reid", "{reid}", "--tracker", "bytetrack"], ["--reid", "has no effect", "bytetrack"]),
        (["--imgsz", "320"], ["--imgsz 320", "160x160", "fixed when it was exported"]),
        (["-S", "data.synthetic.frames=30"], ["data.synthetic.frames has no effect on `motops track`"]),
        (["-S", "registry.experiment=x"], ["registry.experiment has no effect"]),  # only for models:/ engines
        (["-S", "track.gmc_method=none", "--tracker", "bytetrack"], ["track.gmc_method=none", "bytetrack"]),
        (["--detect-every", "0"], ["--detect-every 0", "greater than or equal to 1"]),
    ],
    ids=["reid-vs-with_reid-false", "with_reid-without-model", "reid-on-bytetrack", "imgsz-static-onnx",
         "data-key", "registry-key", "gmc-on-bytetrack", "bad-option-value"],
)
def test_detector_refuses_what_cannot_take_effect(kit, tmp_path: Path, args: list[str], needles: list[str]) -> None:
    out = tmp_path / "run"
    args = [a.format(reid=kit["reid"]) for a in args]
    _refused(_track(kit, out, "--detector", str(kit["det"]), *args), out, *needles)


def test_detector_imgsz_takes_effect_on_a_pt_model(kit: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _track(kit, out, "--detector", str(kit["det_pt"]), "--imgsz", "192", "--max-frames", "2")
    assert result.exit_code == 0, result.output
    assert _summary(out)["imgsz"] == [192, 192]


# --------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def project(kit: dict[str, Path]) -> Path:
    """A project folder the evaluate stage can run in: the val sequence's tables, split.json, params."""
    from motops.data.mot import read_mot_dataset

    proj = kit["root"] / "project"
    (proj / "data").mkdir(parents=True)
    sequences, annotations = read_mot_dataset(kit["seq"].parent)
    sequences.write_parquet(proj / "data" / "sequences.parquet")
    annotations.write_parquet(proj / "data" / "annotations.parquet")
    (proj / "data" / "prepared").mkdir()
    (proj / "data" / "prepared" / "split.json").write_text(json.dumps({"train": [], "val": [kit["seq"].name]}))
    (proj / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {"sweep_thresholds": [0.3], "plots": False, "fps_warmup_frames": 0, "max_frames": 6},
    }))
    return proj


def _evaluate(project: Path, monkeypatch: pytest.MonkeyPatch, bundle: Path, *args: str):
    monkeypatch.chdir(project)
    return runner.invoke(app, ["evaluate", "-S", f"export.engine_dir={bundle}", *args])


def _clean(project: Path) -> None:
    import shutil

    for name in ("reports", "models", "metrics"):
        shutil.rmtree(project / name, ignore_errors=True)


def test_evaluate_with_reid_true_takes_effect_and_is_kept_in_the_release(kit, project: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(project)
    result = _evaluate(project, monkeypatch, kit["motion"], "-S", "track.with_reid=true")
    assert result.exit_code == 0, result.output
    assert "over the bundle's tracker.yaml: track.with_reid=true" in result.output
    summary = json.loads((project / "reports" / "evaluate" / "runs" / kit["seq"].name / "summary.json").read_text())
    assert summary["appearance"] is True and summary["reid_calls"] > 0
    assert summary["settings_from"]["with_reid"] == "user"
    release = yaml.safe_load((project / "models" / "release" / "tracker.yaml").read_text())
    assert release["with_reid"] is True  # the engine that was scored is the engine that is gated
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    assert metrics["engine"]["user_settings"] == "with_reid=true"
    assert metrics["engine"]["reid"].startswith("reid.onnx")


@pytest.mark.parametrize(
    ("bundle", "args", "needles"),
    [
        ("no_reid", ["-S", "track.with_reid=true"], ["track.with_reid=true", "has no ReID model", "re-run export"]),
        ("motion", ["-S", "track.track_high_thresh=0.5"],
         ["track.track_high_thresh=0.5", "confidence sweep", "evaluate.sweep_thresholds=[0.5]"]),
        ("motion", ["-S", "track.new_track_thresh=0.5"], ["track.new_track_thresh=0.5", "confidence sweep"]),
        ("motion", ["-S", "track.backend=torch"], ["track.backend=torch", "no torch weights"]),
        ("motion", ["-S", "detector.epochs=3"], ["-S detector.epochs=3", "no effect on `motops evaluate`"]),
        ("motion", ["-S", "track.gmc_method=none", "-S", "track.tracker=bytetrack"], ["track.gmc_method=none"]),
    ],
    ids=["with_reid-no-model", "swept-high", "swept-new", "backend-torch", "other-section", "gmc-on-bytetrack"],
)
def test_evaluate_refuses_what_cannot_take_effect(kit, project: Path, monkeypatch: pytest.MonkeyPatch, bundle: str,
                                                  args: list[str], needles: list[str]) -> None:
    _clean(project)
    result = _evaluate(project, monkeypatch, kit[bundle], *args)
    _refused(result, project / "reports", *needles)
    assert not (project / "models").exists() and not (project / "metrics").exists()
    assert pl.read_parquet(project / "data" / "sequences.parquet").height == 1


@pytest.mark.parametrize("min_gain", [0.0, 1.0], ids=["any-gain-keeps-it", "no-gain-is-enough"])
def test_evaluate_measures_appearance_and_records_the_choice(kit, project: Path, monkeypatch: pytest.MonkeyPatch,
                                                             min_gain: float) -> None:
    """With a ReID model in the bundle and no explicit with_reid, the sweep runs with and without it."""
    _clean(project)
    result = _evaluate(project, monkeypatch, kit["motion"], "-S", f"evaluate.appearance_min_gain={min_gain}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    choice = metrics["appearance"]
    assert choice["measured"] is True and choice["metric"] == "idf1"
    gain = choice["appearance"] - choice["motion"]
    assert choice["with_reid"] is (gain >= min_gain)  # 1.0 can never be reached: motion only
    release = yaml.safe_load((project / "models" / "release" / "tracker.yaml").read_text())
    assert release["with_reid"] is choice["with_reid"]
    summary = json.loads((project / "reports" / "evaluate" / "runs" / kit["seq"].name / "summary.json").read_text())
    assert summary["appearance"] is choice["with_reid"] and (summary["reid_calls"] > 0) is choice["with_reid"]


def test_evaluate_explicit_with_reid_is_not_second_guessed(kit, project: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(project)
    result = _evaluate(project, monkeypatch, kit["motion"], "-S", "track.with_reid=false")
    assert result.exit_code == 0, result.output
    choice = json.loads((project / "metrics" / "eval.json").read_text())["appearance"]
    assert choice["measured"] is False and choice["with_reid"] is False


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_evaluate_records_the_runtime_that_ran(kit, project: Path, monkeypatch: pytest.MonkeyPatch,
                                               backend: str) -> None:
    """eval.json's backend (what gates.fps_min is keyed by) is the detector's runtime, not a fixed label."""
    import importlib.util

    from motops.config import GatesParams
    from motops.registry.gates import evaluate_gate

    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install 'motops[openvino]')")
    _clean(project)
    result = _evaluate(project, monkeypatch, kit["motion"], "-S", f"track.backend={backend}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    assert metrics["backend"] == backend, metrics["engine"]["detector"]
    assert f"({backend})" in metrics["engine"]["detector"]
    assert f"FPS ({backend})" in result.output
    manifest = json.loads((project / "models" / "release" / "manifest.json").read_text())
    assert manifest["metrics"]["tracking"]["backend"] == backend
    gate = evaluate_gate(metrics, GatesParams(fps_min={backend: 1e6}), backend=metrics["backend"])
    rule = next(r for r in gate["rules"] if r["rule"] == "fps_min")
    assert rule["threshold"] == 1e6 and rule["passed"] is False  # the runtime's own floor applies


def test_evaluate_labels_each_runtime_by_the_detector_that_ran() -> None:
    from types import SimpleNamespace

    from motops.evaluation.run import detector_runtime

    for name in ("onnxruntime", "openvino", "tensorrt"):
        assert detector_runtime(SimpleNamespace(detector=SimpleNamespace(backend=name))) == name
    with pytest.raises(ValueError, match="does not say which runtime"):
        detector_runtime(SimpleNamespace(detector=object()))


def test_evaluate_stage_script_applies_track_overrides_and_refuses_unused_keys(
        kit, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`python stages/evaluate.py -S track.KEY=...` follows the same rules as `motops evaluate`."""
    from motops.stages import main

    _clean(project)
    monkeypatch.chdir(project)
    engine = f"export.engine_dir={kit['motion']}"
    assert main("evaluate", ["-S", engine, "-S", "detector.epochs=3"]) == 2
    assert "detector.epochs has no effect on `python stages/evaluate.py`" in capsys.readouterr().err
    assert not (project / "metrics").exists()
    assert main("evaluate", ["-S", engine, "-S", "track.with_reid=true"]) == 0
    assert "over the bundle's tracker.yaml: track.with_reid=true" in capsys.readouterr().out
    release = yaml.safe_load((project / "models" / "release" / "tracker.yaml").read_text())
    assert release["with_reid"] is True


def test_paired_fps_times_each_bundle_in_turns_on_the_same_frames(kit: dict[str, Path]) -> None:
    """The gate's same-run timing: every bundle tracks the same frames once per round."""
    from motops.errors import ConfigError
    from motops.evaluation.speed import paired_fps

    bundles = {"challenger": kit["reid_on"], "champion": kit["motion"]}
    timed = paired_fps(bundles, kit["seq"], backend="onnxruntime", max_frames=4, rounds=3, warmup_frames=1)
    assert (timed["frames"], timed["rounds"]) == (4, 3)
    assert set(timed["fps"]) == set(timed["runs"]) == {"challenger", "champion"}
    for name, runs in timed["runs"].items():
        assert len(runs) == 3 and all(v > 0 for v in runs)
        assert timed["fps"][name] == sorted(runs)[1]  # the median round
    with pytest.raises(ConfigError, match="expected two or more"):
        paired_fps({"challenger": kit["reid_on"]}, kit["seq"])
    with pytest.raises(ConfigError, match="rounds=0"):
        paired_fps(bundles, kit["seq"], rounds=0)

"""The detector part of ``prepare`` (split, YOLO set) and ``train_detector``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
import yaml

from motops.config import AugmentParams, DetectorParams, SyntheticParams
from motops.data.mot import SeqInfo, read_mot_dataset, write_seqinfo
from motops.data.prepare import build_yolo_dataset, clip_frames, split_sequences
from motops.errors import ConfigError, DataFormatError, MotopsError

# --------------------------------------------------------------------------- split


def test_split_by_whole_sequence_is_disjoint_and_seeded() -> None:
    names = [f"seq-{i}" for i in range(8)]
    train, val = split_sequences(names, val_fraction=0.25, seed=3)
    assert len(val) == 2 and len(train) == 6
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(names)
    # same seed, any order: same split; another seed may differ but stays disjoint
    assert split_sequences(list(reversed(names)), val_fraction=0.25, seed=3) == (train, val)
    other = {tuple(split_sequences(names, val_fraction=0.25, seed=s)[1]) for s in range(10)}
    assert len(other) > 1


def test_split_keeps_one_sequence_per_side() -> None:
    assert split_sequences(["a", "b"], val_fraction=0.01, seed=0)[1] != []
    train, val = split_sequences(["a", "b"], val_fraction=0.99, seed=0)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(MotopsError, match="at least 2 sequences"):
        split_sequences(["only"], val_fraction=0.5, seed=0)


def test_split_explicit_val_list_wins() -> None:
    train, val = split_sequences(["a", "b", "c"], val_sequences=["c", "a"], val_fraction=0.9, seed=0)
    assert (train, val) == (["b"], ["a", "c"])


def test_split_refuses_unknown_and_all_val() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*'zzz'.*a, b, c"):
        split_sequences(["a", "b", "c"], val_sequences=["a", "zzz", "nope"])
    with pytest.raises(ConfigError, match="at least one must stay for training"):
        split_sequences(["a", "b"], val_sequences=["a", "b"])


def test_clip_frames() -> None:
    assert clip_frames(12, 3, 5) == [1, 2, 3, 6, 7, 8, 11, 12]
    assert clip_frames(4, 8, 5) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- YOLO set

W, H = 200, 100
GT = [
    "1,1,11,21,40,80,1,1,1.0",  # x 10..50, y 20..100 -> 0.15 0.6 0.2 0.8
    "1,2,181,-9,40,30,1,1,0.9",  # clipped to x 180..200, y 0..20 -> 0.95 0.1 0.1 0.2
    "1,3,50,50,10,10,1,1,0.1",  # hardly visible: dropped
    "1,4,60,50,10,10,0,1,1.0",  # ignored (consider = 0): dropped
    "1,5,70,50,10,10,1,3,1.0",  # a car: not a mapped class
    "2,1,12,21,40,80,1,1,1.0",
    "4,1,14,21,40,80,1,1,1.0",
]


def _sequence(root: Path, name: str, gt: list[str], length: int = 4) -> Path:
    seq = root / name
    info = SeqInfo(name=name, im_dir="img1", fps=25.0, length=length, width=W, height=H, im_ext=".jpg")
    write_seqinfo(seq / "seqinfo.ini", info)
    (seq / "gt").mkdir(parents=True)
    (seq / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    for rel in info.frame_files():
        (seq / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(seq / rel), np.full((H, W, 3), 90, np.uint8))
    return seq


@pytest.fixture()
def two_sequences(tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    _sequence(tmp_path / "raw", "A", GT)
    _sequence(tmp_path / "raw", "B", ["1,1,1,1,20,20,1,1,1"])
    return read_mot_dataset(tmp_path / "raw")


def _labels(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2).reshape(-1, 5)


def test_yolo_labels_for_known_boxes(tmp_path: Path, two_sequences) -> None:
    sequences, annotations = two_sequences
    data_yaml = build_yolo_dataset(
        sequences,
        annotations,
        train=["A"],
        val=["B"],
        out_dir=tmp_path / "yolo",
        clip_length=2,
        clip_stride=3,
        min_visibility=0.3,
        progress=False,
    )
    out = tmp_path / "yolo"
    # clips of 2 frames every 3: frames 1, 2 and 4 of 4
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [
        "A_000001.jpg",
        "A_000002.jpg",
        "A_000004.jpg",
    ]
    labels = _labels(out / "labels" / "train" / "A_000001.txt")
    np.testing.assert_allclose(labels, [[0, 0.15, 0.6, 0.2, 0.8], [0, 0.95, 0.1, 0.1, 0.2]], atol=1e-6)
    np.testing.assert_allclose(_labels(out / "labels" / "train" / "A_000002.txt"), [[0, 0.155, 0.6, 0.2, 0.8]])
    # an image without ignored boxes is linked, not re-encoded
    src = Path(sequences.filter(pl.col("sequence") == "A")["path"][0]) / "img1" / "000002.jpg"
    assert (out / "images" / "train" / "A_000002.jpg").read_bytes() == src.read_bytes()
    # the pedestrian with consider = 0 (id 4, x 59..69, y 49..59) is masked out: neither person nor background
    masked = cv2.imread(str(out / "images" / "train" / "A_000001.jpg"))
    assert abs(float(masked[51:57, 61:67].mean()) - 114) < 3 and abs(float(masked[5:15, 100:110].mean()) - 90) < 3
    # val: sequence B only, its frame without boxes keeps an empty label file
    assert sorted(p.name for p in (out / "labels" / "val").iterdir()) == [
        "B_000001.txt",
        "B_000002.txt",
        "B_000004.txt",
    ]
    assert (out / "labels" / "val" / "B_000002.txt").read_text() == ""

    spec = yaml.safe_load(data_yaml.read_text())
    assert spec == {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": {0: "person"}}
    split = json.loads((out / "split.json").read_text())
    assert split["train"]["sequences"] == ["A"] and split["val"]["sequences"] == ["B"]
    assert (split["train"]["images"], split["train"]["boxes"]) == (3, 4)
    assert (split["val"]["images"], split["val"]["boxes"]) == (3, 1)


def test_yolo_set_rebuild_replaces_stale_files(tmp_path: Path, two_sequences) -> None:
    sequences, annotations = two_sequences
    kwargs = dict(out_dir=tmp_path / "yolo", clip_length=1, clip_stride=1, min_visibility=0.0, progress=False)
    build_yolo_dataset(sequences, annotations, train=["A"], val=["B"], **kwargs)
    build_yolo_dataset(sequences, annotations, train=["B"], val=["A"], **kwargs)
    assert {p.name[0] for p in (tmp_path / "yolo" / "images" / "train").iterdir()} == {"B"}
    # min_visibility 0 keeps the hardly visible box, still not the ignored row nor the car
    assert len(_labels(tmp_path / "yolo" / "labels" / "val" / "A_000001.txt")) == 3


def test_yolo_set_refuses_bad_splits(tmp_path: Path, two_sequences) -> None:
    sequences, annotations = two_sequences
    kwargs = dict(out_dir=tmp_path / "yolo", clip_length=1, clip_stride=1, min_visibility=0.3, progress=False)
    with pytest.raises(ConfigError, match="'C'"):
        build_yolo_dataset(sequences, annotations, train=["A", "C"], val=["B"], **kwargs)
    with pytest.raises(ConfigError, match="both train and val"):
        build_yolo_dataset(sequences, annotations, train=["A", "B"], val=["B"], **kwargs)
    with pytest.raises(ConfigError, match="val split is empty"):
        build_yolo_dataset(sequences, annotations, train=["A"], val=[], **kwargs)


def test_yolo_set_refuses_a_sequence_without_pedestrians_naming_its_gt(tmp_path: Path) -> None:
    """Footage labelled with cars only (MOT class 3) would train a detector on nothing: stop, name the file."""
    _sequence(tmp_path / "raw", "A", GT)
    cars = _sequence(tmp_path / "raw", "B", ["1,1,1,1,20,20,1,3,1", "2,1,2,2,20,20,1,3,1"])
    sequences, annotations = read_mot_dataset(tmp_path / "raw")
    out = tmp_path / "yolo"
    with pytest.raises(DataFormatError, match=r"gt.txt.*sequence 'B' has no scored box of class \[1\].*classes \[3\]"
                       ) as info:
        build_yolo_dataset(sequences, annotations, train=["A"], val=["B"], out_dir=out, clip_length=1,
                           clip_stride=1, min_visibility=0.3, progress=False)
    assert str(cars / "gt" / "gt.txt") in str(info.value)
    assert not out.exists()  # refused before anything was written


# --------------------------------------------------------------------------- train_detector


def test_missing_weights_refused(tmp_path: Path) -> None:
    from motops.training.detector import train_detector

    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: person}\n")
    params = DetectorParams(weights=str(tmp_path / "nowhere" / "yolov8n.pt"))
    with pytest.raises(ConfigError, match=r"detector.weights: .*nowhere.*does not exist.*never downloaded"):
        train_detector(
            tmp_path / "data.yaml", params, AugmentParams(), out_dir=tmp_path / "out", metrics_path=tmp_path / "m.json"
        )
    with pytest.raises(ConfigError, match="detector.model: expected a model YAML"):
        train_detector(
            tmp_path / "data.yaml",
            DetectorParams(model="yolov8n.pt", weights=None),
            AugmentParams(),
            out_dir=tmp_path / "out",
            metrics_path=tmp_path / "m.json",
        )
    with pytest.raises(DataFormatError, match="prepare stage"):
        train_detector(
            tmp_path / "absent.yaml",
            DetectorParams(weights=None),
            AugmentParams(),
            out_dir=tmp_path / "out",
            metrics_path=tmp_path / "m.json",
        )
    assert not (tmp_path / "out").exists()


def test_resolve_device() -> None:
    import torch

    from motops.training.detector import resolve_device

    assert resolve_device("auto") == ("0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("0,1") == "0,1"


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to resolve a host name or open a socket connection."""
    attempts: list[str] = []

    def refuse(name: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{name}{args[:2]!r}")
            raise OSError(f"network disabled in tests: {name}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


@pytest.mark.slow
def test_train_detector_smoke(tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics import YOLO
    from ultralytics.utils import USER_CONFIG_DIR

    from motops.data.synthetic import synthesize
    from motops.training.detector import METRIC_KEYS, train_detector

    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up here
    config_before = sorted(p.name for p in USER_CONFIG_DIR.iterdir()) if USER_CONFIG_DIR.is_dir() else []
    settings = USER_CONFIG_DIR / "settings.json"
    settings_before = settings.read_bytes() if settings.is_file() else None

    synth = SyntheticParams(sequences=2, frames=20, width=320, height=192, people=(6,), occluders=0, seed=1)
    synthesize(tmp_path / "footage", synth, progress=False)
    sequences, annotations = read_mot_dataset(tmp_path / "footage")
    train, val = split_sequences(sequences["sequence"].to_list(), val_fraction=0.5, seed=0)
    data_yaml = build_yolo_dataset(
        sequences,
        annotations,
        train=train,
        val=val,
        out_dir=tmp_path / "yolo",
        clip_length=4,
        clip_stride=5,
        min_visibility=0.3,
        progress=False,
    )
    params = DetectorParams(weights=None, imgsz=160, epochs=1, batch=4, device="cpu", workers=0, seed=0,
                            time_budget_min=None)
    augment = AugmentParams(motion_blur_p=1.0, occlusion_p=1.0, brightness_p=1.0)
    t0 = time.perf_counter()
    metrics = train_detector(
        data_yaml, params, augment, out_dir=tmp_path / "model", metrics_path=tmp_path / "metrics.json", progress=False
    )
    seconds = time.perf_counter() - t0

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    for key in METRIC_KEYS:
        assert 0.0 <= saved[key] <= 1.0, (key, saved[key])
    assert saved["epochs"] == 1 and len(saved["history"]) == 1
    assert saved["history"][0]["epoch"] == 1 and "metrics/mAP50(B)" in saved["history"][0]
    assert (saved["images_train"], saved["images_val"]) == (16, 16)
    assert 0 < saved["seconds"] <= seconds + 1

    best = tmp_path / "model" / "best.pt"
    assert best.is_file()
    frame = cv2.imread(str(tmp_path / "footage" / val[0] / "img1" / "000001.jpg"))
    result = YOLO(str(best)).predict(frame, imgsz=160, device="cpu", verbose=False)[0]
    assert result.boxes is not None and result.orig_shape == (192, 320)

    assert no_network == []
    assert sorted(os.listdir(tmp_path)) == ["footage", "metrics.json", "model", "yolo"]  # no runs/, no *.pt
    assert saved["selected"] == "trained" and saved["start_scores"] is None  # from scratch: no start to keep
    assert yaml.safe_load((tmp_path / "model" / "args.yaml").read_text())["freeze"] is None  # all layers learn

    # Finetuning from a checkpoint: the starting weights are scored on val too and kept when no
    # epoch beats them. Which side wins on this tiny set is chance, so the start's val score is
    # pinned to each extreme in turn (the real validation still runs) to check what is shipped.
    import motops.training.detector as detector_module

    real_validate = detector_module._validate

    def start_scores_map(value: float):
        def validate(weights, data, params, device, project, name, progress):
            result = real_validate(weights, data, params, device, project, name, progress)
            if name == "val_start":
                result.box.all_ap = np.full((max(len(result.box.all_ap), 1), 10), value)
            return result

        return validate

    start = tmp_path / "start.pt"
    shutil.copy2(best, start)
    finetune = params.model_copy(update={"weights": str(start), "freeze": 10})
    for pinned, expected in ((1.0, "start"), (0.0, "trained")):
        monkeypatch.setattr(detector_module, "_validate", start_scores_map(pinned))
        out = tmp_path / f"finetune-{expected}"
        again = train_detector(data_yaml, finetune, augment, out_dir=out, metrics_path=out / "m.json", progress=False)
        assert again["selected"] == expected
        assert yaml.safe_load((out / "args.yaml").read_text())["freeze"] == finetune.freeze == 10  # backbone frozen
        assert again["start_scores"]["map50_95"] == pinned
        assert ((out / "best.pt").read_bytes() == start.read_bytes()) == (expected == "start")
        if expected == "start":  # the shipped scores are the start's
            assert again["map50"] == again["map50_95"] == 1.0
    monkeypatch.setattr(detector_module, "_validate", real_validate)

    # freeze "auto": one probe epoch per arm from the start; the better val mAP50-95 goes on and is recorded
    auto = finetune.model_copy(update={"freeze": "auto", "epochs": 3, "keep_better_start": False})
    out = tmp_path / "finetune-auto"
    probed = train_detector(data_yaml, auto, augment, out_dir=out, metrics_path=out / "m.json", progress=False)
    decision = probed["decisions"]["freeze"]
    scores = decision["probe_map50_95"]
    assert decision["mode"] == "auto" and set(scores) == {"frozen_backbone", "all_layers"}
    assert decision["chosen"] == (10 if scores["frozen_backbone"] >= scores["all_layers"] else 0)
    runs = [row["run"] for row in probed["history"]]
    assert runs == ["probe_frozen", "probe_all", "train"]  # 3 epochs in all: two probes, then one more
    assert [row["freeze"] for row in probed["history"]][2] == decision["chosen"]
    assert probed["epochs"] == 3 and probed["decisions"]["stop"].startswith("epochs done")

    # a budget that cannot hold the probes and one epoch is refused before anything is trained
    tiny_budget = auto.model_copy(update={"time_budget_min": 0.001})
    out = tmp_path / "finetune-budget"
    with pytest.raises(ConfigError, match=r"detector.time_budget_min: 0.001 min cannot hold"):
        train_detector(data_yaml, tiny_budget, augment, out_dir=out, metrics_path=out / "m.json", progress=False)
    assert not (out / "best.pt").exists() and not (out / "m.json").exists()

    after = sorted(p.name for p in USER_CONFIG_DIR.iterdir()) if USER_CONFIG_DIR.is_dir() else []
    assert after == config_before  # no fonts downloaded
    assert (settings.read_bytes() if settings.is_file() else None) == settings_before


@pytest.mark.slow
def test_tracking_augment_runs_inside_ultralytics_training(tmp_path: Path, no_network: list[str]) -> None:
    """The hook is in the training dataset's transforms, stays there when mosaic closes, and runs."""
    from motops.data.synthetic import synthesize
    from motops.training.augment import TrackingAugment, UltralyticsTrackingTransform
    from motops.training.detector import _local_fonts_only, _make_trainer_class

    synth = SyntheticParams(sequences=2, frames=6, width=320, height=192, people=(5,), occluders=0, seed=2)
    synthesize(tmp_path / "footage", synth, progress=False)
    sequences, annotations = read_mot_dataset(tmp_path / "footage")
    data_yaml = build_yolo_dataset(
        sequences,
        annotations,
        train=[sequences["sequence"][0]],
        val=[sequences["sequence"][1]],
        out_dir=tmp_path / "yolo",
        clip_length=6,
        clip_stride=6,
        min_visibility=0.3,
        progress=False,
    )
    augment = TrackingAugment(AugmentParams(motion_blur_p=1.0, occlusion_p=1.0, brightness_p=1.0), seed=0)
    trainer_cls = _make_trainer_class(augment)
    overrides = dict(
        model="yolov8n.yaml",
        data=str(data_yaml),
        imgsz=160,
        epochs=1,
        batch=2,
        device="cpu",
        workers=0,
        plots=False,
        amp=False,
        project=str(tmp_path / "runs"),
        name="t",
        exist_ok=True,
        close_mosaic=1,
        val=False,
        verbose=False,
    )
    with _local_fonts_only():
        trainer = trainer_cls(overrides=overrides)
        trainer.train()
    dataset = trainer.train_loader.dataset
    hooks = [t for t in dataset.transforms.transforms if isinstance(t, UltralyticsTrackingTransform)]
    assert len(hooks) == 1  # close_mosaic (epochs=1, close_mosaic=1) rebuilt the transforms; the hook survived
    names = [type(t).__name__ for t in dataset.transforms.transforms]
    assert names.index("UltralyticsTrackingTransform") == len(names) - 2 and names[-1] == "Format"
    assert augment.applied["calls"] >= 6  # every training image went through it
    assert augment.applied["motion_blur"] == augment.applied["calls"]
    mlflow_like = [f for fs in trainer.callbacks.values() for f in fs if "callbacks.mlflow" in f.__module__]
    assert mlflow_like == []
    assert no_network == []

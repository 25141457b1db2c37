"""The ``train_detector`` stage: finetune (or train from scratch) an Ultralytics YOLO detector.

Offline by construction: weights come from a local ``.pt`` or the model is built from its
YAML; the AMP self-check (which would download a model) is never run (CPU trains in FP32,
CUDA in bf16 where supported, which Ultralytics does not check); plots are off (they
download fonts); Ultralytics' data-set check, which always looks for a font online, is
given a local-only font lookup for the duration of the run; and Ultralytics' third-party
logging integrations (MLflow, DVC, Comet, ClearML, W&B, TensorBoard, Ray Tune, its
Platform) are removed from the trainer, because :mod:`motops.registry` alone talks to
MLflow. None of this changes Ultralytics' settings file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from motops.config import AugmentParams, DetectorParams
from motops.errors import ConfigError, DataFormatError
from motops.training.augment import TrackingAugment, install_tracking_augment

#: Ultralytics callback modules that send data elsewhere; stripped from the trainer.
_INTEGRATION_MODULES = tuple(
    f"ultralytics.utils.callbacks.{name}"
    for name in ("mlflow", "dvc", "comet", "clearml", "wb", "tensorboard", "raytune", "platform", "hub")
)

#: Keys of the metrics JSON besides ``history``.
METRIC_KEYS = ("map50", "map50_95", "precision", "recall")


def resolve_device(device: str) -> str:
    """``auto`` -> ``"0"`` when CUDA is available, else ``"cpu"``; anything else unchanged.

    Args:
        device: ``detector.device``: ``auto``, ``cpu``, or CUDA indices (``"0"``, ``"0,1"``).
    """
    if device.strip().lower() != "auto":
        return device.strip()
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _precision(device: str) -> bool | str:
    """Ultralytics ``amp``: never the FP16 mode, whose self-check downloads a model."""
    if device.lower() in {"cpu", "mps"}:
        return False
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else False


def _initial_model(params: DetectorParams) -> str:
    """The local weights or model YAML to start from; refuses anything that would be downloaded."""
    if params.weights:
        path = Path(params.weights)
        if path.suffix != ".pt":
            raise ConfigError(f"detector.weights: expected a local .pt file, got {params.weights!r}")
        if not path.is_file():
            raise ConfigError(
                f"detector.weights: {path} does not exist; give a local .pt file (weights are never "
                f"downloaded) or null to train from detector.model ({params.model})"
            )
        return str(path.resolve())
    if not params.model.endswith((".yaml", ".yml")):
        raise ConfigError(
            f"detector.model: expected a model YAML such as 'yolov8n.yaml', got {params.model!r}; "
            "pretrained weights go in detector.weights as a local .pt file"
        )
    return params.model


def _make_trainer_class(augment: TrackingAugment | None) -> type:
    """A ``DetectionTrainer`` without logging integrations, with the tracking augmentations unless ``None``."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class MotopsDetectionTrainer(DetectionTrainer):
        tracking_augment = augment

        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            dataset = super().build_dataset(img_path, mode=mode, batch=batch)
            if mode == "train" and self.tracking_augment is not None:
                install_tracking_augment(dataset, self.tracking_augment)
            return dataset

        def run_callbacks(self, event: str) -> None:
            # The integrations are added inside BaseTrainer.__init__ and run at once; dropping them here,
            # before any runs, needs no change to Ultralytics' persistent settings.
            for name, funcs in self.callbacks.items():
                self.callbacks[name] = [
                    f for f in funcs if not (getattr(f, "__module__", None) or "").startswith(_INTEGRATION_MODULES)
                ]
            super().run_callbacks(event)

    return MotopsDetectionTrainer


@contextlib.contextmanager
def _local_fonts_only() -> Iterator[None]:
    """Ultralytics' data-set check looks for Arial online whatever YOLO_OFFLINE says; make it local-only."""
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import USER_CONFIG_DIR

    def check_font(font: str = "Arial.ttf") -> Path | None:
        file = USER_CONFIG_DIR / Path(font).name
        return file if file.exists() else None

    original = data_utils.check_font
    data_utils.check_font = check_font
    try:
        yield
    finally:
        data_utils.check_font = original


@contextlib.contextmanager
def _run_folder(run_dir: str | Path | None) -> Iterator[str]:
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="motops-yolo-") as tmp:
            yield tmp
    else:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        yield str(Path(run_dir).resolve())


def _label_caches(data_yaml: Path) -> list[Path]:
    import yaml

    spec = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    root = Path(spec.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    return list((root / "labels").glob("*.cache")) if (root / "labels").is_dir() else []


def _count_images(data_yaml: Path) -> dict[str, int]:
    import yaml

    spec = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    counts = {}
    for side in ("train", "val"):
        if side not in spec:
            raise DataFormatError(data_yaml, f"key '{side}' is missing; expected an images folder relative to 'path'")
        folder = root / spec[side]
        counts[side] = sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
        if counts[side] == 0:
            raise DataFormatError(data_yaml, f"'{side}' points at {folder}, which holds no images")
    return counts


def _read_history(results_csv: Path) -> list[dict[str, float | int]]:
    """Per-epoch rows of Ultralytics' ``results.csv`` (keys stripped, values as floats)."""
    if not results_csv.is_file():
        return []
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                try:
                    row[key.strip()] = int(value) if key.strip() == "epoch" else float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def _fraction(value: Any) -> float:
    value = float(value)
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


#: ``freeze`` of the probe's frozen arm: YOLOv8's first ten modules are its backbone.
BACKBONE_MODULES = 10

#: Seconds kept back from the time budget for the final validation(s) of the chosen weights.
_FINAL_VAL_FACTOR = 2.0


def _fitness(row: dict[str, Any]) -> float:
    """Ultralytics' detection fitness (val mAP50-95) of one ``results.csv`` row or metrics dict."""
    return float(row.get("metrics/mAP50-95(B)", 0.0))


class _Run:
    """One Ultralytics training run inside the stage: its weights, history and why it stopped."""

    def __init__(self, name: str, freeze: int, best: Path, history: list[dict[str, float | int]],
                 stop_reason: str) -> None:  # fmt: skip
        self.name, self.freeze, self.best, self.history, self.stop_reason = name, freeze, best, history, stop_reason

    @property
    def best_fitness(self) -> float:
        return max((_fitness(row) for row in self.history), default=0.0)


def _fit(start: str, params: DetectorParams, data_yaml: Path, device: str, trainer_cls: type, project: str,
         name: str, *, freeze: int | None, epochs: int, time_h: float | None, progress: bool) -> _Run:  # fmt: skip
    """Train from ``start`` and return the run's best weights and per-epoch history."""
    from ultralytics import YOLO

    t0 = time.perf_counter()
    model = YOLO(start, task="detect")
    model.train(
        trainer=trainer_cls,
        data=str(data_yaml.resolve()),
        epochs=epochs,
        time=time_h,
        batch=params.batch,
        imgsz=params.imgsz,
        lr0=params.lr0,
        optimizer="SGD",  # 'auto' would ignore lr0 and pick its own optimizer and rate
        patience=params.patience,
        warmup_epochs=params.warmup_epochs,
        close_mosaic=params.close_mosaic,
        freeze=freeze or None,
        device=device,
        workers=params.workers,
        seed=params.seed,
        deterministic=True,
        amp=_precision(device),
        pretrained=bool(params.weights),
        plots=False,
        verbose=progress,
        project=project,
        name=name,
        exist_ok=True,
    )
    trainer = model.trainer
    save_dir = Path(trainer.save_dir)
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    history = _read_history(save_dir / "results.csv")
    if len(history) - trainer.stopper.best_epoch >= params.patience:
        reason = f"early stop: no better val mAP50-95 in the last {params.patience} epochs"
    elif time_h and time.perf_counter() - t0 >= time_h * 3600 * 0.95:
        reason = f"time budget ({len(history)} epochs)"
    else:
        reason = f"epochs done ({len(history)})"
    return _Run(name, int(freeze or 0), best, history, reason)


def _budget_left(params: DetectorParams, t0: float) -> float | None:
    if params.time_budget_min is None:
        return None
    return params.time_budget_min * 60 - (time.perf_counter() - t0)


def train_detector(
    data_yaml: str | Path,
    params: DetectorParams,
    augment: AugmentParams,
    *,
    out_dir: str | Path,
    metrics_path: str | Path,
    progress: bool = True,
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the detector on a YOLO data set and score it on the val split.

    Starts from ``params.weights`` (a local ``.pt``) when given, else from ``params.model``
    (a YAML, random weights), with SGD at ``params.lr0`` (Ultralytics' ``optimizer=auto``
    would replace the configured rate). How long to train and what to train are measured,
    not fixed, so the same params serve footage close to the starting weights and footage far
    from them:

    - ``params.freeze == "auto"`` (finetuning only): one epoch with the backbone frozen and one
      with every layer, both from the starting weights; the better val mAP50-95 goes on from
      its probe's weights.
    - ``params.time_budget_min``: the rest of the stage's wall-clock budget goes to Ultralytics'
      time mode (the learning-rate schedule is fitted to it), with early stopping after
      ``params.patience`` epochs without a better val mAP50-95; ``params.epochs`` caps the epochs
      when no budget is set.
    - ``params.keep_better_start``: the starting weights are scored on val too and shipped when
      no trained epoch beats their mAP50-95 (a finetune must not ship a worse detector than the
      one it started from).

    What was decided and why is returned (and written) under ``decisions``. Ultralytics' run
    folders live in a temporary directory; ``best.pt``, ``results.csv`` and ``args.yaml`` of the
    chosen run are copied into ``out_dir``. Sets ``YOLO_OFFLINE=1`` when it is unset.

    Args:
        data_yaml: ``data.yaml`` written by :func:`motops.data.prepare.build_yolo_dataset`.
        params: ``detector`` params; ``device="auto"`` picks CUDA device 0 when present.
        augment: ``prepare.augment``: tracking augmentations applied to training images.
        out_dir: Folder for ``best.pt`` and the run's records; created if missing.
        metrics_path: JSON file written with the metrics returned.
        progress: Keep Ultralytics' per-epoch progress bars and summaries.
        run_dir: Keep Ultralytics' run folders (``weights/last.pt`` after every epoch) here
            instead of a temporary directory; long runs can then be inspected or salvaged.

    Returns:
        ``map50``, ``map50_95``, ``precision``, ``recall`` (fractions in [0, 1], from a
        final validation of the shipped weights on the val split), ``selected`` (``trained``, or
        ``start`` when the starting weights were kept), ``start_scores`` (the starting weights'
        four scores; ``None`` when not measured), ``freeze`` (the modules frozen in the shipped
        run), ``decisions`` (``freeze``: how it was chosen, with the probe scores; ``stop``: why
        training ended; ``budget_min``), ``epochs`` (trained, probes included), ``images_train``,
        ``images_val``, ``seconds`` (wall time), ``device`` and ``history`` (one dict per
        epoch from Ultralytics' ``results.csv``, probe epochs first: ``epoch``, losses,
        ``metrics/mAP50(B)`` …).

    Raises:
        ConfigError: the weights file is missing or not a ``.pt``, the model is not a YAML, or
            ``detector.time_budget_min`` is too short for one epoch of this data set.
        DataFormatError: ``data_yaml`` is missing or a split holds no images.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DataFormatError(data_yaml, "data set description not found; run the prepare stage first")
    start = _initial_model(params)
    images = _count_images(data_yaml)
    out_dir, metrics_path = Path(out_dir), Path(metrics_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")

    # Ultralytics writes label caches next to the labels; the data set is another stage's output,
    # so the caches it creates are removed again at the end (existing ones are left alone)
    caches_before = set(_label_caches(data_yaml))
    device = resolve_device(params.device)
    trainer_cls = _make_trainer_class(TrackingAugment(augment, seed=params.seed))
    finetune = bool(params.weights)
    t0 = time.perf_counter()
    decisions: dict[str, Any] = {"budget_min": params.time_budget_min}
    with _run_folder(run_dir) as tmp, _local_fonts_only():
        start_val, start_scores, val_seconds = None, None, 0.0
        if finetune and (params.keep_better_start or params.freeze == "auto"):
            tv = time.perf_counter()
            start_val = _validate(Path(start), data_yaml, params, device, tmp, "val_start", progress)
            val_seconds = time.perf_counter() - tv
            start_scores = _scores(start_val)
            _check_budget(params, images, val_seconds, t0)
        runs: list[_Run] = []
        if finetune and params.freeze == "auto":
            for arm, freeze in (("probe_frozen", BACKBONE_MODULES), ("probe_all", 0)):
                runs.append(_fit(start, params, data_yaml, device, trainer_cls, tmp, arm, freeze=freeze, epochs=1,
                                 time_h=None, progress=progress))  # fmt: skip
            frozen, full = runs
            chosen = frozen if frozen.best_fitness >= full.best_fitness else full
            decisions["freeze"] = {
                "mode": "auto",
                "probe_map50_95": {"frozen_backbone": frozen.best_fitness, "all_layers": full.best_fitness},
                "start_map50_95": start_scores["map50_95"] if start_scores else None,
                "chosen": chosen.freeze,
                "reason": (f"one epoch each from the start: backbone frozen {frozen.best_fitness:.3f}, all layers "
                           f"{full.best_fitness:.3f} val mAP50-95"),
            }  # fmt: skip
            next_start, freeze = str(chosen.best), chosen.freeze
        else:
            chosen, next_start = None, start
            freeze = int(params.freeze) if finetune and params.freeze != "auto" else 0
            decisions["freeze"] = {"mode": "fixed" if finetune else "from scratch: all layers", "chosen": freeze}
        left = _budget_left(params, t0)
        reserve = _FINAL_VAL_FACTOR * max(val_seconds, 1.0)
        done = len(runs)
        if left is not None and left - reserve < 60:
            main = None
            decisions["stop"] = f"time budget: {left:.0f} s left after the probes, less than a minute to train"
        elif params.epochs - done < 1:
            main = None
            decisions["stop"] = f"epochs done ({done})"
        else:
            main = _fit(next_start, params, data_yaml, device, trainer_cls, tmp, "train", freeze=freeze,
                        epochs=params.epochs - done, time_h=None if left is None else (left - reserve) / 3600,
                        progress=progress)  # fmt: skip
            runs.append(main)
            decisions["stop"] = main.stop_reason
        # the shipped run: the main run, or the probe it continued when the main run did no better
        best_run = max((r for r in (main, chosen) if r is not None), key=lambda r: r.best_fitness, default=None)
        if best_run is None:  # no probe and no main run (epochs exhausted): nothing trained
            raise ConfigError("detector.epochs: no epoch left to train after the probes; raise it")
        shutil.copy2(best_run.best, out_dir / "best.pt")
        for name in ("results.csv", "args.yaml"):
            if (Path(tmp) / best_run.name / name).is_file():
                shutil.copy2(Path(tmp) / best_run.name / name, out_dir / name)
        history = _merged_history(runs)
        val = _validate(out_dir / "best.pt", data_yaml, params, device, tmp, "val", progress)
        selected = "trained"
        if start_val is not None and params.keep_better_start and start_val.box.map > val.box.map:
            shutil.copy2(start, out_dir / "best.pt")  # Ultralytics' own best.pt criterion: mAP50-95
            val, selected = start_val, "start"
    for cache in set(_label_caches(data_yaml)) - caches_before:
        cache.unlink(missing_ok=True)
    metrics: dict[str, Any] = {
        **_scores(val),
        "selected": selected,
        "start_scores": start_scores,
        "freeze": freeze if selected == "trained" else None,
        "decisions": decisions,
        "epochs": len(history),
        "images_train": images["train"],
        "images_val": images["val"],
        "seconds": round(time.perf_counter() - t0, 2),
        "device": device,
        "history": history,
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _check_budget(params: DetectorParams, images: dict[str, int], val_seconds: float, t0: float) -> None:
    """Refuse a time budget that cannot hold one training epoch, before any training.

    An epoch is estimated from the measured validation pass: a training step costs about three
    forward passes (forward, backward) and the epoch ends with a validation.
    """
    left = _budget_left(params, t0)
    if left is None:
        return
    per_image = val_seconds / max(images["val"], 1)
    epoch = per_image * 3 * images["train"] + val_seconds
    probes = 2 if params.freeze == "auto" else 0
    if left < epoch * (probes + 1):
        raise ConfigError(
            f"detector.time_budget_min: {params.time_budget_min:g} min cannot hold "
            f"{'the two probe epochs and ' if probes else ''}one training epoch here (about {epoch / 60:.1f} min "
            f"per epoch for {images['train']} train images, estimated from the val pass); raise it, or set it to "
            f"null and give detector.epochs"
        )


def _merged_history(runs: list[_Run]) -> list[dict[str, float | int]]:
    """The runs' per-epoch rows one after another, numbered through, each tagged with its run."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        for row in run.history:
            rows.append({**row, "epoch": len(rows) + 1, "run": run.name, "freeze": run.freeze})
    return rows


def _validate(weights: Path, data_yaml: Path, params: DetectorParams, device: str, project: str, name: str,
              progress: bool) -> Any:  # fmt: skip
    from ultralytics import YOLO

    return YOLO(str(weights), task="detect").val(
        data=str(data_yaml.resolve()), imgsz=params.imgsz, batch=params.batch, device=device, plots=False,
        verbose=progress, project=project, name=name, exist_ok=True,
    )  # fmt: skip


def _scores(val: Any) -> dict[str, float]:
    box = val.box
    return {"map50": _fraction(box.map50), "map50_95": _fraction(box.map), "precision": _fraction(box.mp),
            "recall": _fraction(box.mr)}  # fmt: skip


def plot_history(history: list[dict[str, float | int]], path: str | Path) -> Path:
    """Write a PNG of a detector run: losses per epoch (left), val precision/recall/mAP per epoch (right).

    Args:
        history: Rows of Ultralytics' ``results.csv`` (see :func:`train_detector`'s ``history``).
        path: Destination PNG (folders are created).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for key, label in (("train/box_loss", "box"), ("train/cls_loss", "cls"), ("train/dfl_loss", "dfl")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Detector losses")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for key, label in (("metrics/precision(B)", "precision"), ("metrics/recall(B)", "recall"),
                       ("metrics/mAP50(B)", "mAP50"), ("metrics/mAP50-95(B)", "mAP50-95")):
        if history and key in history[0]:
            ax_val.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label)
    ax_val.set(xlabel="epoch", ylabel="val score", title="Detector on the val sequences", ylim=(0, 1))
    ax_val.legend()
    ax_val.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path

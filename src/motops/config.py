"""The one configuration: ``params.yaml`` loaded into frozen, typed models.

``params.yaml`` is parsed here and nowhere else. Unknown or misspelt keys are refused
with the file, the line, the key path and the closest valid key; wrong types and
out-of-range values name the key and what is allowed. Overrides use the syntax of
``dvc exp run -S``: ``section.key=value`` with the value parsed as YAML.

Example:
    >>> params = load_params("params.yaml", overrides=["data.synthetic.frames=30"])
    >>> params.data.synthetic.frames
    30
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from motops.errors import ConfigError

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    """Base of every params model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class SourceSpec(_Section):
    """One footage source the ``ingest`` stage reads besides the synthetic footage."""

    format: Literal["mot", "cvat", "visdrone"] = Field(
        description="mot: MOTChallenge folder (MOT17/MOT20/DanceTrack); cvat: a CVAT 'MOT 1.1' "
        "zip export; visdrone: a VisDrone-MOT folder (sequences/ + annotations/)."
    )
    path: str = Field(description="File or folder, relative to the repository root.")
    fps: float | None = Field(
        default=None, gt=0, description="Frame rate for formats that do not record it (cvat, visdrone)."
    )
    name: str | None = Field(default=None, description="Sequence name for a cvat zip (default: the zip's stem).")
    labels: Literal["gt", "pseudo"] = Field(
        default="gt",
        description="gt: labelled by people; pseudo: labelled by the champion (motops.pseudo). Pseudo-labelled "
        "sequences train the detector and the ReID but are never val sequences: validation and the gate score "
        "people's labels only.",
    )


class SyntheticParams(_Section):
    """The built-in synthetic footage. Lists are cycled over the sequences, so the default
    set covers 5-30 fps, static and moving cameras, sparse scenes and crowds."""

    sequences: PositiveInt = Field(default=4, description="Number of sequences to write.")
    frames: Annotated[int, Field(ge=2)] = Field(default=150, description="Frames per sequence.")
    width: Annotated[int, Field(ge=64, le=7680)] = 640
    height: Annotated[int, Field(ge=64, le=4320)] = 360
    seed: int = Field(default=0, description="Same seed, byte-identical footage.")
    fps: tuple[Annotated[float, Field(gt=0, le=240)], ...] = Field(
        default=(30.0, 15.0, 10.0, 5.0), min_length=1, description="Frame rate per sequence, cycled."
    )
    camera: tuple[Literal["static", "pan", "jitter"], ...] = Field(
        default=("static", "pan", "static", "jitter"), min_length=1, description="Camera motion, cycled."
    )
    people: tuple[Annotated[int, Field(ge=1, le=200)], ...] = Field(
        default=(8, 20, 35, 12), min_length=1, description="Target number of people in view, cycled."
    )
    min_person_height: Annotated[float, Field(ge=4)] = Field(
        default=12.0, description="Height in pixels of a person at the horizon (far away)."
    )
    max_person_height: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.45, description="Height of a person at the bottom edge, as a fraction of the image height."
    )
    horizon: Annotated[float, Field(ge=0, lt=0.9)] = Field(
        default=0.3, description="Where the ground plane starts, as a fraction of the image height."
    )
    lookalike_fraction: Fraction = Field(
        default=0.3, description="Share of identities that copy another's look with small differences."
    )
    occluders: Annotated[int, Field(ge=0, le=50)] = Field(default=3, description="Static occluders per sequence.")
    motion_blur: bool = True
    noise_sigma: Annotated[float, Field(ge=0, le=50)] = Field(default=4.0, description="Sensor noise std, grey levels.")
    brightness_drift: Annotated[float, Field(ge=0, le=0.9)] = Field(
        default=0.15, description="Largest relative change of global brightness over a sequence."
    )
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 90
    # Domain randomization (issue 17): what a detector trained here must learn is *not* a person.
    view: tuple[Literal["street", "elevated"], ...] = Field(
        default=("street", "elevated", "elevated", "street"), min_length=1,
        description="Camera placement, cycled: street (eye level, people from 12 px to 45 % of the height) or "
                    "elevated (a camera on a building looking down: small people, little size change, as CCTV).",
    )
    backgrounds: str | None = Field(
        default="builtin",
        description="Ground textures: 'builtin' (CC0 photographs of grass, gravel and brick shipped with motops), "
                    "a folder of images (grey or colour; a file name with grass/gravel/brick picks its tint), or "
                    "null (procedural paving only, as before issue 17). Nothing is downloaded.",
    )
    missing_backgrounds: Literal["error", "procedural"] = Field(
        default="error",
        description="A backgrounds folder that is missing, empty or holds an unreadable image: 'error' stops "
                    "the stage naming it; 'procedural' logs why and renders procedural backgrounds.",
    )
    clutter: Annotated[int, Field(ge=0, le=100)] = Field(
        default=10, description="Unlabelled person-like clutter per sequence (poles, lamp posts, signs, bins, "
                                "bollards, cones, trees, tripods).",
    )
    shadows: bool = Field(default=True, description="Soft shadows at people's feet and cast shadows on the ground.")
    defocus: Fraction = Field(default=0.4, description="Share of sequences rendered slightly out of focus (3x3 blur).")
    write_video: bool = Field(default=False, description="Also write SEQ.mp4 next to each sequence.")
    name_prefix: str = Field(
        default="synth", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Sequences are named PREFIX-01, PREFIX-02, ...; names must be unique across sources.",
    )


class DataParams(_Section):
    """Where footage comes from and where the normalized data set goes."""

    sources: tuple[Literal["synthetic"] | SourceSpec, ...] = Field(
        default=("synthetic",),
        min_length=1,
        description="'synthetic' and/or {format, path[, fps]} entries; all are ingested together.",
    )
    raw_dir: str = Field(default="data/raw", description="User footage, tracked with .dvc files.")
    synthetic_dir: str = Field(default="data/synthetic", description="Output of the synthesize stage.")
    sequences_dir: str = Field(default="data/sequences", description="Normalized MOTChallenge layout.")
    annotations: str = "data/annotations.parquet"
    sequences_table: str = "data/sequences.parquet"
    default_fps: Annotated[float, Field(gt=0, le=240)] = Field(
        default=30.0, description="Frame rate of sources that do not record one and give no fps."
    )
    synthetic: SyntheticParams = SyntheticParams()

    @property
    def uses_synthetic(self) -> bool:
        """Whether the synthetic footage is one of the sources."""
        return "synthetic" in self.sources


class ValidationParams(_Section):
    """The Great Expectations suites run by the ``validate`` stage."""

    max_outside_fraction: Fraction = Field(
        default=0.8,
        description="Largest share of a box's area that may lie outside the image (real MOT17 boxes reach 79%). "
        "Raising it accepts boxes further outside.",
    )
    max_track_gap_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="Largest gap, in seconds, between two annotated frames of one id (people leave the view "
        "of a panning camera and come back). Raising it accepts longer gaps.",
    )
    min_track_length: PositiveInt = Field(
        default=2,
        description="Fewest scored (conf > 0) rows an id must have, unless the sequence's first or last frame cuts it.",
    )
    classes: tuple[int, ...] = Field(default=tuple(range(1, 14)), min_length=1, description="Known class ids.")
    check_images: bool = Field(default=True, description="Check every frame's image exists, is whole and sized right.")
    max_examples: PositiveInt = Field(default=5, description="Offending rows named per failed expectation.")
    report_dir: str = "reports/validation"


# ------------------------------------------------------------------ later stages


class AugmentParams(_Section):
    """Tracking augmentations; each has a probability and a strength."""

    motion_blur_p: Fraction = 0.3
    motion_blur_max_len: Annotated[int, Field(ge=3, le=61)] = Field(default=15, description="Kernel length, px.")
    occlusion_p: Fraction = 0.3
    occlusion_max_frac: Fraction = Field(default=0.4, description="Largest share of a box a patch covers.")
    brightness_p: Fraction = 0.5
    brightness_strength: Fraction = Field(default=0.3, description="Largest relative brightness/contrast change.")


class PrepareParams(_Section):
    """Train/val split by sequence, detector set and ReID crop set."""

    val_sequences: tuple[str, ...] = Field(default=(), description="Explicit val sequences; empty: by fraction.")
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
    clip_length: Annotated[int, Field(ge=1, le=60)] = Field(default=8, description="Frames per sampled clip.")
    clip_stride: PositiveInt = Field(default=20, description="Frames between clip starts.")
    min_visibility: Fraction = Field(default=0.3, description="Boxes less visible are ignored for training.")
    reid_clip_min: Annotated[int, Field(ge=2)] = 5
    reid_clip_max: Annotated[int, Field(ge=2)] = 15
    reid_heldout_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.3, description="Share of ids held out for query/gallery evaluation."
    )
    seed: int = 0
    out_dir: str = Field(default="data/prepared", description="yolo/ (detection set), reid/ (crops), split.json.")
    augment: AugmentParams = AugmentParams()

    @model_validator(mode="after")
    def _clip_range(self) -> PrepareParams:
        if self.reid_clip_min > self.reid_clip_max:
            raise ValueError(f"reid_clip_min ({self.reid_clip_min}) must be <= reid_clip_max ({self.reid_clip_max})")
        return self


class DetectorParams(_Section):
    """Ultralytics YOLOv8 finetuning."""

    model: str = Field(default="yolov8n.yaml", description="Model YAML used when no weights are given.")
    weights: str | None = Field(
        default="models/base/detector.pt",
        description="Local .pt to finetune from (default: the pretrain stage's checkpoint); never downloaded; "
        "null trains the model YAML from scratch.",
    )
    imgsz: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = Field(
        default=416,
        description="Training size. 416 finds the small far-away people 320 misses (default run: val mAP50 "
        "0.83 against 0.77) at ~1.7x the detector's time per frame.",
    )
    epochs: PositiveInt = Field(
        default=40,
        description="Most epochs to train. With detector.time_budget_min the budget and the early stop usually end "
        "training first; with time_budget_min null exactly this many are run (a reproducible epoch count).",
    )
    time_budget_min: Annotated[float, Field(gt=0)] | None = Field(
        default=8.0,
        description="Wall-clock minutes for the whole stage (freeze probe, training, final validation). Ultralytics' "
        "time mode fits the learning-rate schedule to what is left after the probe. Raising it trains longer on "
        "footage that keeps improving; null: run detector.epochs whatever they take.",
    )
    batch: PositiveInt = 16
    lr0: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.002,
        description="Initial learning rate. Finetuning the base checkpoint at 0.01 undid it (val mAP50 fell "
        "from 0.69 after the first epoch to 0.63); 0.002 kept improving (0.77 at 320).",
    )
    patience: PositiveInt = Field(
        default=5,
        description="Stop after this many epochs without a better val mAP50-95 (Ultralytics' fitness). Lower stops "
        "sooner on footage that has stopped improving; the time budget still caps the run.",
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu, or a CUDA index list.")
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    seed: int = 0
    warmup_epochs: Annotated[float, Field(ge=0)] = Field(
        default=0.5, description="Epochs of learning-rate warm-up; short finetunes want less than 1."
    )
    close_mosaic: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="Last epochs trained without mosaic. The default finetune is best with mosaic throughout "
        "(val mAP50 0.837, mAP50-95 0.493, against 0.829 / 0.454 with the last 2 epochs without).",
    )
    freeze: Annotated[int, Field(ge=0, le=22)] | Literal["auto"] = Field(
        default="auto",
        description="Freeze the first N modules while finetuning (YOLOv8n: 10 = the backbone); 0 trains all; "
        "auto: a one-epoch probe of each (backbone frozen, all layers) from the starting weights, and the one "
        "with the better val mAP50-95 goes on. Unused when training from the YAML. Neither fixed choice "
        "transfers: on the synthetic set training everything made the base checkpoint worse (val mAP50 0.877 "
        "before, 0.837 at best after), on real footage (PETS09-S2L1) the frozen backbone held it at 0.743 "
        "where training everything reached 0.940.",
    )
    keep_better_start: bool = Field(
        default=True,
        description="Score the starting weights on val too and keep them when no finetuned epoch beats their "
        "mAP50-95 (Ultralytics' best.pt criterion): a retrain must not ship a worse detector than it started from.",
    )


class PretrainReidParams(_Section):
    """The frozen ``pretrain_reid`` stage: the project's own base ReID checkpoint.

    Trained from scratch with the ``reid`` section's architecture and losses on the crops of
    ``pretrain.synthetic`` (hundreds of identities: the default footage has ~60), so a user's
    footage with a handful of people finetunes a net that already tells people apart.
    """

    weights: str = Field(default="models/base/reid.pt", description="The base checkpoint written (committed).")
    metrics: str = "metrics/pretrain_reid.json"
    epochs: PositiveInt = Field(default=10, description="Passes over the pretraining crops.")
    heldout_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.1, description="Share of identities held out to score the checkpoint."
    )


class PretrainParams(_Section):
    """The frozen ``pretrain`` stage: the project's own base detector checkpoint.

    Trained from the model YAML on a larger synthetic set drawn with its own seed (so it
    never sees the default run's sequences); its output is committed to git and is what
    ``detector.weights`` finetunes by default. ``dvc repro`` does not re-run it (the stage
    is frozen); ``dvc repro -f pretrain`` (or ``dvc unfreeze pretrain``) rebuilds it.
    """

    # Issue 17: many short domain-randomized sequences (scene variety); the fourth step's footage,
    # two street views in three (as the third step's; the second step's was two elevated in three).
    synthetic: SyntheticParams = SyntheticParams(
        sequences=64, frames=96, seed=1003, view=("street", "elevated", "street")
    )
    work_dir: str = Field(default="models/base/work", description="Footage, data set and run folder (not kept).")
    weights: str = Field(default="models/base/detector.pt", description="The base checkpoint written.")
    metrics: str = "metrics/pretrain.json"
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.17
    clip_length: Annotated[int, Field(ge=1, le=60)] = 1
    clip_stride: PositiveInt = 4
    min_visibility: Fraction = 0.3
    # Continued from the previous base (detector_v4.pt: the third step, see the README's "Why a
    # pretrain stage") at the default run's 416 on fresh footage for a 45-minute budget.
    detector: DetectorParams = DetectorParams(
        weights="models/base/detector_v4.pt", imgsz=416, epochs=40, lr0=0.003, warmup_epochs=0.5, close_mosaic=0,
        patience=100, time_budget_min=45.0, freeze=0, keep_better_start=False,
    )
    reid: PretrainReidParams = PretrainReidParams()


class ReidParams(_Section):
    """The appearance branch: ID cross-entropy + batch-hard triplet loss."""

    height: Annotated[int, Field(ge=32, le=512)] = 64
    width: Annotated[int, Field(ge=16, le=256)] = 32
    embedding_dim: Annotated[int, Field(ge=32, le=2048)] = 128
    channels: tuple[PositiveInt, ...] = Field(
        default=(16, 32, 64, 128),
        description="Channels of the stem and of each residual stage (the net's width).",
    )
    blocks: tuple[PositiveInt, ...] = Field(
        default=(1, 1, 2), description="Residual blocks per stage; one entry per stage of `channels`."
    )
    weights: str | None = Field(
        default="models/base/reid.pt",
        description="A ReID checkpoint to finetune from (the classifier is rebuilt for the footage's identities); "
        "its input size, width and embedding size replace height/width/channels/blocks/embedding_dim. "
        "null: train from scratch.",
    )
    keep_better_start: bool = Field(
        default=True,
        description="Keep the starting weights when training does not beat them on the held-out identities (mAP).",
    )
    epochs: PositiveInt = Field(default=6, description="Passes over the training crops; the default set plateaus ~6.")
    p_ids: Annotated[int, Field(ge=2)] = Field(
        default=8,
        description="Identities per batch (P), at most: footage with fewer training identities puts all of them in "
        "every batch (metrics/reid.json records the P used).",
    )
    k_instances: Annotated[int, Field(ge=2)] = Field(default=4, description="Crops per identity per batch (K).")
    lr: Annotated[float, Field(gt=0, le=1)] = 3.5e-4
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 5e-4
    id_loss_weight: Annotated[float, Field(ge=0)] = 1.0
    triplet_loss_weight: Annotated[float, Field(ge=0)] = 1.0
    triplet_margin: Annotated[float, Field(gt=0, le=5)] = 0.3
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    device: str = "auto"
    seed: int = 0
    max_steps: PositiveInt | None = Field(default=None, description="Stop after this many steps (None: epochs).")

    @model_validator(mode="after")
    def _architecture(self) -> ReidParams:
        if len(self.channels) != len(self.blocks) + 1:
            raise ValueError(
                f"channels has {len(self.channels)} entries and blocks {len(self.blocks)}; expected one stem "
                "channel count followed by one per stage (len(channels) == len(blocks) + 1)"
            )
        return self


class TensorRTParams(_Section):
    """TensorRT plans, built only where CUDA and TensorRT are present."""

    fp16: bool = True
    int8: bool = True
    workspace_gb: Annotated[float, Field(gt=0, le=64)] = 2.0


ImageSide = Annotated[int, Field(ge=32, le=4096, multiple_of=32)]


class ExportParams(_Section):
    """ONNX, INT8 and TensorRT export and the engine bundle."""

    opset: Annotated[int, Field(ge=11, le=21)] = 17
    dynamic_batch: bool = True
    simplify: bool = True
    int8_reid: bool = True
    int8_detector: bool = Field(
        default=True,
        description="Also ship a calibrated INT8 QDQ detector (detector.int8.onnx) with its mAP50 cost on val in the "
        "manifest; the runtime runs it only where track.int8_max_map50_drop and the CPU allow (VNNI/AMX). Measured on "
        "the default run (AMD EPYC, AVX2 only): 11 s of calibration and quantization (192 training frames), forward "
        "13.5 against 18.3 ms (x1.36), mAP50 0.878 against 0.885 on val (-0.67 points); issue #14 measured x1.66 "
        "on a Xeon with VNNI/AMX.",
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: Annotated[int, Field(ge=8, le=10000)] = 256
    parity_iou: Fraction = 0.95
    parity_score_tol: Fraction = 0.01
    parity_cosine: Fraction = 0.999
    engine_dir: str = "models/engine"
    imgsz: tuple[ImageSide, ImageSide] | Literal["auto"] | None = Field(
        default="auto",
        description="(H, W) of the exported detector; null: detector.imgsz square; auto: width detector.imgsz and "
        "the height that fits the val footage's aspect ratio, rounded up to a multiple of 32 (16:9 at 416: "
        "256x416; 4:3: 320x416). A fixed 16:9 shape letterboxes 4:3 footage to 256x341 and shrinks its people.",
    )
    tensorrt: TensorRTParams = TensorRTParams()


class TrackParams(_Section):
    """Tracker settings (ByteTrack / BoT-SORT) and frame skipping."""

    tracker: Literal["bytetrack", "botsort"] = "botsort"
    track_high_thresh: Fraction = Field(default=0.25, description="First-stage association score. Raising it "
                                        "sends more boxes to the weaker second stage.")
    track_low_thresh: Fraction = Field(default=0.1, description="Boxes below are discarded.")
    new_track_thresh: Fraction = Field(default=0.35, description="Score an unmatched box needs to start a track.")
    match_thresh: Fraction = Field(default=0.8, description="Largest matching cost (1 - IoU) accepted.")
    track_buffer: PositiveInt = Field(default=30, description="Frames a lost track is kept (at 30 fps; scaled by fps).")
    fuse_score: bool = True
    with_reid: bool = Field(
        default=False,
        description="BoT-SORT appearance from the ReID branch, as exported; evaluate measures with and without it "
        "on val (evaluate.choose_appearance) and the release bundle's tracker.yaml keeps what wins.",
    )
    proximity_thresh: Fraction = Field(
        default=0.05,
        description="Smallest IoU between a track and a detection for their appearance to be compared (BoT-SORT). "
        "At 5-7 fps true matches often overlap little: on the synthetic val (5 fps, shaking camera) appearance "
        "added 0.008 IDF1 at 0.5 and 0.25 at 0.05 (0.398 -> 0.652); 0.0 (no gate) let look-alikes across the "
        "image swap ids (IDF1 0.34).",
    )
    appearance_thresh: Fraction = Field(
        default=0.75,
        description="Smallest appearance similarity (1 - cosine distance / 2, Ultralytics' BoT-SORT) for a match to "
        "use appearance; raising it demands more similar embeddings. 0.75 (cosine >= 0.5): synthetic val IDF1 "
        "0.652, against 0.643 at 0.5 (with proximity_thresh 0.05).",
    )
    gmc_method: Literal["none", "sparseOptFlow", "orb", "ecc"] = "sparseOptFlow"
    embed: Literal["all", "needed"] = Field(
        default="needed",
        description="Which detections the ReID embeds (BoT-SORT with appearance; one batched call per frame): 'all' "
        "kept boxes, as in BoT-SORT, or only those 'needed': high-score boxes whose match appearance could change or "
        "that start a track (motops.runtime.bytetrack.ByteTracker._needs_embedding).",
    )
    detect_every: PositiveInt = Field(default=1, description="Run the detector every N-th frame; flow in between.")
    flow: Literal["dis", "farneback"] = "dis"
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt", "openvino"] = "auto"
    int8_max_map50_drop: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01,
        description="Largest mAP50 cost on val (fraction; 0.01 = one point), recorded in the bundle's manifest, at "
        "which backend auto runs the INT8 detector on a CPU with VNNI/AMX (or OpenVINO's bf16 on AMX). Raising it "
        "trades detection accuracy for speed there; CPUs without VNNI/AMX run FP32 regardless "
        "(motops.runtime.hardware).",
    )


class EvaluateParams(_Section):
    """TrackEval scoring, the confidence sweep and the FPS benchmark."""

    sweep_thresholds: tuple[Fraction, ...] = Field(default=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7), min_length=1)
    sweep_metric: Literal["idf1", "hota"] = "idf1"
    sweep_tolerance: Annotated[float, Field(ge=0, le=0.2)] = Field(
        default=0.01,
        description="The highest swept confidence threshold whose sweep_metric is within this of the best wins: "
        "val is a few sequences, a lower threshold bought by less is noise there, and its extra low-confidence "
        "boxes are what new footage turns into false positives (issue 17: the default engine's 0.3, 0.009 IDF1 "
        "above 0.4 on synth-04, tracked PETS09 at MOTA 0.18; 0.4: 0.46). 0: the best, ties to the higher.",
    )
    sweep_nms_iou: tuple[Fraction, ...] = Field(
        default=(0.5, 0.6, 0.7),
        min_length=1,
        description="Detector NMS IoU thresholds the sweep tries (the val frames are detected once per value); the "
        "best goes into the release bundle's tracker.yaml (ties: the bundle's, then the looser). A partly trained "
        "detector puts two boxes with IoU 0.6-0.7 on one person, "
        "which 0.7 keeps (PETS09-S2L1 val: 84 false positives, MOTA 0.734; at 0.6: MOTA 0.881) while crowds need "
        "a looser one.",
    )
    fps_warmup_frames: Annotated[int, Field(ge=0)] = 5
    plots: bool = True
    out_dir: str = Field(default="reports/evaluate", description="Plots, sweep table, tracker.yaml, results.")
    release_dir: str = Field(default="models/release", description="The scored bundle: what gate and register see.")
    max_frames: PositiveInt | None = Field(default=None, description="Frames per val sequence scored (None: all).")
    sweep_match_thresh: tuple[Fraction, ...] = Field(
        default=(0.8, 0.95),
        min_length=1,
        description="Association thresholds (track.match_thresh, largest 1 - IoU accepted) the sweep tries besides "
        "the bundle's. Low frame rates need the loose one: people move far between frames (synthetic val at 5 fps: "
        "IDF1 0.398 at 0.8, 0.554 at 0.95; PETS09 at 7 fps: 0.937 -> 0.945), while at 30 fps it joins the wrong "
        "people (MOT17-09 motion: BoT-SORT IDF1 0.670 -> 0.594). An explicit -S track.match_thresh is not swept.",
    )
    choose_appearance: bool = Field(
        default=True,
        description="Sweep BoT-SORT with and without the ReID branch and keep appearance only where it wins on "
        "val (written to the release bundle's tracker.yaml). false: the bundle's track.with_reid as exported.",
    )
    appearance_min_gain: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01,
        description="Sweep-metric gain appearance must bring to be kept: it costs frame time (ReID per detection). "
        "Raising it keeps the cheaper motion-only tracker unless appearance clearly helps.",
    )


class GatesParams(_Section):
    """Registration gates."""

    idf1_min: Fraction = 0.5
    hota_min: Fraction | None = None
    fps_min: dict[Literal["torch", "onnxruntime", "openvino", "tensorrt"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"torch": 2.0, "onnxruntime": 5.0, "openvino": 5.0, "tensorrt": 60.0},
        description="Lowest end-to-end FPS per detector runtime (the one evaluate ran: eval.json's backend).",
    )
    max_regression: Fraction = Field(default=0.02, description="Largest IDF1/FPS drop against the champion.")
    same_run_fps: bool = Field(
        default=True,
        description="Time the champion's bundle again beside the challenger's, on the same val frames, for "
        "fps_regression (FPS measured in different runs differ by more than max_regression on noise alone).",
    )
    fps_frames: Annotated[int, Field(ge=1)] | None = Field(default=150, description="Frames per same-run timing.")
    fps_rounds: Annotated[int, Field(ge=1)] = Field(default=3, description="Same-run timings per engine (median).")


class RegistryParams(_Section):
    """MLflow tracking and model registry."""

    tracking_uri: str = Field(default="sqlite:///mlflow.db", description="Overridden by MLFLOW_TRACKING_URI.")
    experiment: str = "motops"
    model_name: str = "motops-tracker"
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root of a new experiment (a folder relative to the project root, or a URI); "
        "None: mlartifacts/ next to a local SQLite database, the server's choice otherwise.",
    )


class FleetParams(_Section):
    """Publishing to the fleet bucket and the edge agent.

    The environment overrides these (``MOTOPS_FLEET_ENDPOINT_URL``, ``MOTOPS_FLEET_BUCKET``,
    ``MOTOPS_FLEET_PREFIX``, ``MOTOPS_FLEET_CHANNEL``, ``MOTOPS_SIGNING_KEY``,
    ``MOTOPS_PUBLIC_KEY``, ``MOTOPS_EDGE_DIR``); credentials come from boto3's usual sources
    (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, instance roles ...), never from this file.
    """

    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint; None: AWS.")
    bucket: str = "motops-fleet"
    prefix: str = "engines"
    channel: str = "stable"
    signing_key: str | None = Field(
        default=None,
        description="Ed25519 private key (PEM file) of the TUF targets role: it signs releases. Publisher only.",
    )
    timestamp_key: str | None = Field(
        default=None,
        description="Online Ed25519 key (PEM) of the TUF snapshot and timestamp roles, used by publish and the "
        "re-sign flow; None: the signing_key.",
    )
    root_keys: tuple[str, ...] = Field(
        default=(),
        description="Ed25519 private keys (PEM) of the TUF root role, kept offline; needed by `motops fleet init` "
        "and `motops fleet rotate` only. Empty: the signing_key is the one root key.",
    )
    root_threshold: Annotated[int, Field(ge=1, le=16)] = Field(
        default=1, description="Root keys that must sign a new root (a rotation); raising it guards against one "
        "stolen root key, and every rotation then needs that many keys at hand."
    )
    public_key: str | None = Field(
        default=None,
        description="Device: Ed25519 public key (PEM) that signed root version 1; with no trusted_root it accepts "
        "the channel's 1.root.json when that key signed it (how a device of the pre-TUF agent migrates).",
    )
    trusted_root: str | None = Field(
        default=None,
        description="Device: a root.json (TUF root metadata) to trust first; it wins over public_key. Later roots "
        "are followed through the chain of signed roots, so a rotation needs no change here.",
    )
    timestamp_expiry_s: Annotated[float, Field(gt=0)] = Field(
        default=21600.0,
        description="Lifetime of the signed timestamp: a device refuses a channel whose timestamp is older (freeze "
        "attack). Lowering it shortens how long a frozen mirror can go unnoticed; the re-sign flow must run "
        "more often than this (resign_interval_s).",
    )
    snapshot_expiry_s: Annotated[float, Field(gt=0)] = Field(
        default=7 * 86400.0, description="Lifetime of the signed snapshot (re-signed by the re-sign flow)."
    )
    targets_expiry_s: Annotated[float, Field(gt=0)] = Field(
        default=90 * 86400.0, description="Lifetime of the signed targets (re-signed by the re-sign flow)."
    )
    root_expiry_s: Annotated[float, Field(gt=0)] = Field(
        default=365 * 86400.0, description="Lifetime of a root; renew it with `motops fleet rotate` before then."
    )
    resign_interval_s: Annotated[float, Field(gt=0)] = Field(
        default=3600.0,
        description="How often the `resign` deployment re-signs the timestamp (and what is near expiry); keep it "
        "well under timestamp_expiry_s so a few missed runs do not expire a healthy channel.",
    )
    sync_deadline_s: Annotated[float, Field(gt=0)] = Field(
        default=1800.0,
        description="Edge agent: a whole sync gives up after this many seconds (plus at most one read timeout) "
        "and releases the lock; a slow or stalling server cannot hold a device.",
    )
    lock_timeout_s: Annotated[float, Field(ge=0)] = Field(
        default=60.0, description="Edge agent: how long a sync waits for another sync of the same folder to end."
    )
    min_free_mb: Annotated[float, Field(ge=0)] = Field(
        default=64.0,
        description="Edge agent: free space to leave on the install folder's disk; a release whose declared sizes "
        "do not fit is refused before a byte is written.",
    )
    keep_versions: PositiveInt = 3
    poll_interval_s: Annotated[float, Field(gt=0)] = 300.0
    region: str = Field(default="us-east-1", description="S3 region (overridden by AWS_REGION when set).")
    install_dir: str = Field(default="edge", description="Edge agent folder: versions/, current, state.json.")
    multipart_threshold_mb: Annotated[int, Field(ge=5, le=5120)] = Field(
        default=64, description="Files at least this large are uploaded in parts (S3's smallest part is 5 MiB)."
    )
    multipart_chunksize_mb: Annotated[int, Field(ge=5, le=5120)] = Field(
        default=16, description="Part size of multipart uploads; raising it means fewer, longer requests."
    )
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=5, description="Attempts per S3 request (botocore retries with exponential backoff)."
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="Connect and read timeout of one S3 request, seconds."
    )
    build_tensorrt: bool = Field(
        default=True, description="Edge agent: build a TensorRT plan for this GPU when the bundle has none."
    )


class PseudoLabelParams(_Section):
    """The offline labeller of unlabelled footage (``motops.pseudo``): the champion labels it, people
    review what it is unsure of. A box it is unsure of is written with the consider flag 0: training
    masks it out of the image and scoring ignores it; the review task holds the frames with such boxes."""

    imgsz: ImageSide | None = Field(
        default=None,
        description="Detector input width while labelling (height from the footage's aspect ratio, a multiple of "
        "32), run from the champion's detector.pt (logged with each registered run); null: the bundle's own ONNX "
        "at its input size. Larger finds smaller people but is not better for a detector finetuned at 416 on "
        "footage with large people: PETS09-S2L1 frames 201-400, champion trained on 1-200 at 416: boxes "
        "precision/recall 0.93/0.87 and forward-track IDF1 0.76 at its 320x416, 0.92/0.88 and 0.73 at 384x512, "
        "0.90/0.81 and 0.57 at 480x640. Raise it for footage of small, far-away people.",
    )
    conf: Fraction = Field(default=0.1, description="Detector score threshold; the tracker and the filter decide.")
    min_track_frames: PositiveInt = Field(
        default=5,
        description="Detected boxes a track needs to be trusted; a shorter track is kept as uncertain (flag 0). "
        "Raising it sends more short tracks to review.",
    )
    min_mean_score: Fraction = Field(
        default=0.45, description="Mean detector score a track needs to be trusted; below it the track is uncertain."
    )
    max_jump: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="Largest centre displacement between two boxes of a track, in box heights per frame; a larger "
        "step is implausible (an id jumping to another person): the track is cut there and the boxes around the "
        "cut are uncertain. Lowering it cuts more.",
    )
    max_gap: Annotated[int, Field(ge=0, le=300)] = Field(
        default=10, description="Missed frames inside a track filled by linear interpolation (0: none)."
    )
    uncertain_below: Fraction = Field(
        default=0.3, description="A detected box scoring below this is uncertain even on a trusted track."
    )
    stitch_max_gap_s: Annotated[float, Field(ge=0, le=60)] = Field(
        default=2.0,
        description="Longest gap, in seconds, across which a track that ends is joined to one that starts (the "
        "person lost behind an occluder or through missed detections for longer than the tracker's buffer); 0: no "
        "stitching. The trackers of the two passes end a lost person after their buffer, so one person becomes "
        "several ids, and the ReID then learns one person as several.",
    )
    stitch_max_distance: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="How far, in box heights, one track's motion carried across the gap may land from the other's "
        "end for the two to be joined.",
    )
    stitch_min_similarity: Annotated[float, Field(ge=-1, le=1)] = Field(
        default=0.6,
        description="Least cosine similarity of the two tracks' mean appearance (the champion's ReID) for a join; "
        "unused when the bundle has no ReID model (motion alone decides).",
    )
    conflict_margin: Annotated[int, Field(ge=0, le=100)] = Field(
        default=2,
        description="Frames either side of a disagreement between the forward and the backward pass (they link a "
        "box to different tracks) whose boxes of the tracks involved are uncertain.",
    )
    champion_alias: str = Field(default="champion", description="Registered alias of the engine that labels.")


class OrchestrationParams(_Section):
    """How the Prefect flows run the DVC stages (one Prefect task per stage)."""

    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=1, description="Retries of a failed stage task (a bad-data failure fails again, quickly)."
    )
    retry_delay_s: Annotated[float, Field(ge=0)] = Field(default=30.0, description="Seconds between retries.")
    stage_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=7200.0, description="A stage task running longer is stopped and counts as failed."
    )
    inbox: str = Field(default="data/inbox", description="Where new footage arrives: a folder or s3://BUCKET/PREFIX.")
    inbox_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint of an s3:// inbox.")
    retrain_cron: str = Field(default="0 3 * * 1", description="Schedule of the retrain deployment (cron, UTC).")
    commit: bool = Field(default=True, description="git-commit the .dvc files, params.yaml and dvc.lock it changes.")
    push: bool = Field(default=True, description="dvc push after a retrain run.")


class Params(_Section):
    """All of ``params.yaml``."""

    data: DataParams = DataParams()
    validation: ValidationParams = ValidationParams()
    prepare: PrepareParams = PrepareParams()
    detector: DetectorParams = DetectorParams()
    pretrain: PretrainParams = PretrainParams()
    reid: ReidParams = ReidParams()
    export: ExportParams = ExportParams()
    track: TrackParams = TrackParams()
    evaluate: EvaluateParams = EvaluateParams()
    gates: GatesParams = GatesParams()
    registry: RegistryParams = RegistryParams()
    fleet: FleetParams = FleetParams()
    pseudo_labels: PseudoLabelParams = PseudoLabelParams()
    orchestration: OrchestrationParams = OrchestrationParams()


def flatten_params(params: BaseModel) -> dict[str, Any]:
    """Every leaf of the params as ``{"section.key": value}`` (tuples and lists kept as lists; for logging)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), f"{prefix}{name}.")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = list(node) if isinstance(node, tuple) else node

    walk(params, "")
    return out


# ------------------------------------------------------------------------ loading


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> Params:
    """Load and validate ``params.yaml``.

    Args:
        path: The YAML file.
        overrides: ``section.key=value`` strings (``dvc exp run -S`` syntax), applied in order;
            values are parsed as YAML (``3``, ``0.5``, ``[1, 2]``, ``null``).

    Returns:
        The frozen params.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown (with the closest valid
            key), or a value has the wrong type or is out of range (with what is allowed).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read params file ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    origin = {key: f"{path}:{line}" for key, line in lines.items()}
    for item in overrides:
        key, value = _parse_override(item)
        _set_path(raw, key, value, item)
        for done in [k for k in origin if k[: len(key)] == key]:
            del origin[done]  # the file's value under this key is replaced
        for i in range(1, len(key) + 1):
            if key[:i] not in origin:
                origin[key[:i]] = f"override -S {item}"
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, origin)) from None


def _parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from None
    return tuple(key.strip().split(".")), parsed


def _set_path(raw: dict, key: tuple[str, ...], value: Any, item: str) -> None:
    node = raw
    for i, part in enumerate(key[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(key[: i + 1])} is not a section")
        node = child
    node[key[-1]] = value


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map every key path of a composed YAML document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*prefix, str(i))
            out[key] = item.start_mark.line + 1
            out.update(_key_lines(item, key))
    return out


def _describe(exc: ValidationError, path: Path, origin: Mapping[tuple[str, ...], str]) -> str:
    errors = [err for err in exc.errors() if not _wrong_union_branch(err)]
    locs = [tuple(str(p) for p in err["loc"] if not _is_union_tag(p)) for err in errors]
    messages = []
    seen: set[tuple[str, ...]] = set()
    for err, loc in zip(errors, locs, strict=True):
        # a parent's error is a consequence of its child's: report the child only
        if loc in seen or any(other[: len(loc)] == loc and other != loc for other in locs):
            continue
        seen.add(loc)
        where = _where(loc, path, origin)
        dotted = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            model = _model_at(Params, loc[:-1])
            valid = sorted(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            hint = f"did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else ""
            messages.append(
                f"{where}: unknown key '{dotted}'. {hint} Valid keys here: {', '.join(valid)}".replace(".  ", ". ")
            )
        else:
            allowed = _allowed(loc)
            got = repr(err.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            messages.append(f"{where}: key '{dotted}': {err['msg']} (got {got}){allowed}")
    return "invalid params:\n  " + "\n  ".join(messages)


def _wrong_union_branch(err: Any) -> bool:
    """Whether an error belongs to a union branch the input obviously was not meant for."""
    tags = [p for p in err["loc"] if _is_union_tag(p)]
    if not tags:
        return False
    if tags[-1].startswith("literal["):
        return isinstance(err.get("input"), dict)
    return err["loc"][-1] == tags[-1] and err["type"] == "model_type"


def _is_union_tag(part: Any) -> bool:
    # pydantic names union branches in loc, e.g. 'literal['synthetic']' or 'SourceSpec'
    return isinstance(part, str) and (part.startswith("literal[") or part[:1].isupper())


def _where(loc: tuple[str, ...], path: Path, origin: Mapping[tuple[str, ...], str]) -> str:
    for i in range(len(loc), 0, -1):
        if loc[:i] in origin:
            return origin[loc[:i]]
    return str(path)


def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The params model a key path points into (following nested models and lists)."""
    current: Any = model
    for part in loc:
        current = _unwrap_model(current)
        if current is None:
            return None
        if part.isdigit():
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
    return _unwrap_model(current)


def _unwrap_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType, tuple, list, Annotated):
        for arg in typing.get_args(tp):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _allowed(loc: tuple[str, ...]) -> str:
    """Describe the allowed range of a scalar field from its constraints."""
    model = _model_at(Params, loc[:-1])
    if model is None or loc[-1] not in model.model_fields:
        return ""
    field = model.model_fields[loc[-1]]
    bounds = []
    for meta in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, name, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
    args = typing.get_args(field.annotation)
    for arg in args:
        for meta in getattr(arg, "__metadata__", ()):
            for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                value = getattr(meta, name, None)
                if value is not None:
                    bounds.append(f"{symbol} {value}")
    if typing.get_origin(field.annotation) is Literal:
        return f"; allowed: {', '.join(map(repr, typing.get_args(field.annotation)))}"
    return f"; allowed range: {' and '.join(bounds)}" if bounds else ""


def dump_params(params: Params) -> str:
    """The params as YAML, every key with its effective value."""
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)

"""The DVC stages as functions of the params.

Each function here is one stage of ``dvc.yaml``: it reads its inputs from the paths the
params name, calls the library, and writes the outputs ``dvc.yaml`` declares. The scripts
in ``stages/`` only parse arguments and call :func:`main`; the Prefect flows run the same
stages through DVC. No stage logic lives anywhere else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from motops.config import Params, load_params
from motops.errors import MotopsError, ValidationFailed


def synthesize(params: Params, root: Path = Path(".")) -> list[Path]:
    """Stage ``synthesize``: write the built-in synthetic footage.

    When ``data.sources`` does not list ``synthetic`` the output folder is left empty
    (with a note saying why), so the stage graph stays the same for every configuration.

    Returns:
        The sequence folders written (empty when synthetic footage is not a source).
    """
    from motops.data.synthetic import synthesize as write_synthetic

    out = root / params.data.synthetic_dir
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if not params.data.uses_synthetic:
        (out / "SKIPPED.txt").write_text("data.sources does not include 'synthetic'; nothing was generated.\n")
        print(f"synthesize: skipped, 'synthetic' is not in data.sources; {out} left empty")
        return []
    folders = write_synthetic(out, params.data.synthetic)
    print(f"synthesize: wrote {len(folders)} sequences to {out}")
    return folders


def ingest(params: Params, root: Path = Path(".")) -> None:
    """Stage ``ingest``: normalize every source into MOTChallenge layout and parquet tables."""
    from motops.data.ingest import ingest as run_ingest

    sources = [s if isinstance(s, str) else s.model_dump() for s in params.data.sources]
    for source in sources:
        if isinstance(source, dict):
            source["path"] = str(root / source["path"])
    run_ingest(
        sources,
        synthetic_dir=root / params.data.synthetic_dir,
        out_dir=root / params.data.sequences_dir,
        annotations_path=root / params.data.annotations,
        sequences_path=root / params.data.sequences_table,
        default_fps=params.data.default_fps,
    )


def validate(params: Params, root: Path = Path(".")) -> None:
    """Stage ``validate``: run the Great Expectations suites on the ingested data.

    Raises:
        ValidationFailed: an expectation failed; the summary names the offending rows and
            the report folder holds the HTML data docs and ``summary.json``.
    """
    import polars as pl

    from motops.validation.run import check_or_raise, validate_dataset

    sequences = pl.read_parquet(root / params.data.sequences_table)
    annotations = pl.read_parquet(root / params.data.annotations)
    report = validate_dataset(sequences, annotations, params.validation, report_dir=root / params.validation.report_dir)
    check_or_raise(report)
    print(f"validate: {len(sequences)} sequences, {len(annotations)} boxes: all expectations met")


def pretrain(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``pretrain`` (frozen): train the base detector checkpoint from the model YAML.

    Renders ``pretrain.synthetic`` (its own seed: none of the default run's sequences),
    ingests it, builds a detection set and trains ``pretrain.detector`` from scratch.
    Writes ``pretrain.weights`` (committed to git; the default ``detector.weights``) and
    ``pretrain.metrics``. The footage and Ultralytics' run folder stay in
    ``pretrain.work_dir`` (ignored by git) until the next run.
    """
    from motops.data.prepare import build_yolo_dataset, split_sequences
    from motops.training.detector import train_detector

    cfg = params.pretrain
    work = root / cfg.work_dir
    sequences, annotations = _pretrain_footage(params, work)
    train, val = split_sequences(
        sequences["sequence"].to_list(), val_fraction=cfg.val_fraction, seed=cfg.synthetic.seed
    )
    data_yaml = build_yolo_dataset(
        sequences,
        annotations,
        train=train,
        val=val,
        out_dir=work / "yolo",
        clip_length=cfg.clip_length,
        clip_stride=cfg.clip_stride,
        min_visibility=cfg.min_visibility,
    )
    metrics = train_detector(
        data_yaml,
        cfg.detector,
        params.prepare.augment,
        out_dir=work / "out",
        metrics_path=root / cfg.metrics,
        run_dir=work / "runs",
    )
    weights = root / cfg.weights
    weights.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "out" / "best.pt", weights)
    print(
        f"pretrain: {metrics['epochs']} epochs on {metrics['images_train']} images in {metrics['seconds']:.0f} s; "
        f"val mAP50 {metrics['map50']:.3f}; wrote {weights}"
    )
    return metrics


def _pretrain_footage(params: Params, work: Path):
    """Render and ingest ``pretrain.synthetic`` into ``work`` (emptied first): ``(sequences, annotations)``."""
    from motops.data.ingest import ingest as run_ingest
    from motops.data.synthetic import synthesize as write_synthetic

    if work.exists():
        shutil.rmtree(work)
    write_synthetic(work / "synthetic", params.pretrain.synthetic)
    return run_ingest(
        ["synthetic"],
        synthetic_dir=work / "synthetic",
        out_dir=work / "sequences",
        annotations_path=work / "annotations.parquet",
        sequences_path=work / "sequences.parquet",
    )


def pretrain_reid(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``pretrain_reid`` (frozen): train the base ReID checkpoint on many synthetic identities.

    Renders ``pretrain.synthetic`` (the footage the base detector is trained on, never the
    default run's), cuts its tracks into a crop set (``pretrain.reid.heldout_fraction`` of
    the identities held out) and trains the ``reid`` section's net from scratch for
    ``pretrain.reid.epochs``. Writes ``pretrain.reid.weights`` (committed; the default
    ``reid.weights``) and ``pretrain.reid.metrics``; the training curves stay in the work folder.
    """
    from motops.data.crops import build_reid_crops
    from motops.training.reid import train_reid as run

    cfg, p = params.pretrain.reid, params.prepare
    work = root / params.pretrain.work_dir / "reid"
    sequences, annotations = _pretrain_footage(params, work)
    build_reid_crops(
        sequences, annotations, work / "crops", height=params.reid.height, width=params.reid.width,
        clip_min=p.reid_clip_min, clip_max=p.reid_clip_max, heldout_fraction=cfg.heldout_fraction,
        min_visibility=p.min_visibility, seed=params.pretrain.synthetic.seed,
    )
    reid = params.reid.model_copy(update={"epochs": cfg.epochs, "weights": None, "keep_better_start": False,
                                          "max_steps": None})
    metrics = run(
        work / "crops", reid, out_dir=work / "out", metrics_path=root / cfg.metrics,
        plot_path=work / "training.png",  # a clone has no reports/*.png: a frozen stage's outs must be in git
    )
    weights = root / cfg.weights
    weights.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "out" / "reid.pt", weights)
    print(f"pretrain_reid: {metrics['train_ids']} identities, {metrics['steps']} steps; held-out Rank-1 "
          f"{metrics['rank1']:.3f}, mAP {metrics['map']:.3f}; wrote {weights}")
    return metrics


def _tables(params: Params, root: Path):
    import polars as pl

    sequences = pl.read_parquet(root / params.data.sequences_table)
    annotations = pl.read_parquet(root / params.data.annotations)
    # table paths are relative to the repository root
    sequences = sequences.with_columns(
        pl.col("path").map_elements(lambda p: p if Path(p).is_absolute() else str(root / p), return_dtype=pl.Utf8)
    )
    return sequences, annotations


def prepare(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``prepare``: split by sequence; write the YOLO detection set and the ReID crop set.

    The val sequences are held out from both models: the detection set's val side is
    them, and the ReID crops come from the train sequences only (their own held-out
    identities measure the ReID), so ``evaluate`` tracks footage neither model saw.
    Pseudo-labelled sequences (``labels: pseudo``) always train, never validate.
    """
    import json

    import polars as pl

    from motops.data.crops import build_reid_crops
    from motops.data.prepare import build_yolo_dataset, split_sequences

    cfg = params.prepare
    sequences, annotations = _tables(params, root)
    from motops.data.ingest import PSEUDO_SOURCE

    pseudo = sequences.filter(pl.col("source") == PSEUDO_SOURCE)["sequence"].to_list()
    train, val = split_sequences(
        sequences["sequence"].to_list(), val_sequences=cfg.val_sequences, val_fraction=cfg.val_fraction, seed=cfg.seed,
        train_only=pseudo,
    )
    out = root / cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    build_yolo_dataset(
        sequences, annotations, train=train, val=val, out_dir=out / "yolo", clip_length=cfg.clip_length,
        clip_stride=cfg.clip_stride, min_visibility=cfg.min_visibility,
    )
    crops = build_reid_crops(
        sequences.filter(pl.col("sequence").is_in(train)),
        annotations.filter(pl.col("sequence").is_in(train)),
        out / "reid",
        height=params.reid.height,
        width=params.reid.width,
        clip_min=cfg.reid_clip_min,
        clip_max=cfg.reid_clip_max,
        heldout_fraction=cfg.reid_heldout_fraction,
        min_visibility=cfg.min_visibility,
        seed=cfg.seed,
    )
    counts = {side: int((crops["split"] == side).sum()) for side in ("train", "query", "gallery")}
    split = {"train": train, "val": val, "pseudo_labelled": sorted(pseudo), "reid_crops": counts}
    (out / "split.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    print(f"prepare: train {train}, val {val}; ReID crops {counts}")
    return split


def train_detector(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``train_detector``: finetune ``detector.weights`` (or train ``detector.model``) on the prepared set.

    Writes ``models/detector/best.pt``, ``metrics/detector.json`` (``map50``, ``map50_95``,
    ``precision``, ``recall`` on the val sequences, plus run facts), the per-epoch history in
    ``models/detector/history.json`` and ``reports/detector_training.png``.
    """
    import json

    from motops.training.detector import plot_history
    from motops.training.detector import train_detector as run

    det = params.detector
    if det.weights and not Path(det.weights).is_absolute():
        det = det.model_copy(update={"weights": str(root / det.weights)})
    out = root / "models" / "detector"
    metrics_path = root / "metrics" / "detector.json"
    metrics = run(root / params.prepare.out_dir / "yolo" / "data.yaml", det, params.prepare.augment,
                  out_dir=out, metrics_path=metrics_path)
    history = metrics.pop("history")
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    metrics["start"] = "finetuned from " + str(params.detector.weights) if params.detector.weights else "from scratch"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    plot_history(history, root / "reports" / "detector_training.png")
    print(f"train_detector: mAP50 {metrics['map50']:.3f}, mAP50-95 {metrics['map50_95']:.3f}, "
          f"P {metrics['precision']:.3f}, R {metrics['recall']:.3f} ({metrics['seconds']:.0f} s)")
    decided = metrics["decisions"]
    why = decided["freeze"].get("reason", decided["freeze"]["mode"])
    print(f"train_detector: freeze {decided['freeze']['chosen']} ({why}); "
          f"{metrics['epochs']} epochs, stopped by {decided.get('stop', 'n/a')}")
    if metrics["selected"] == "start":
        trained = max((row.get("metrics/mAP50-95(B)", 0.0) for row in history), default=0.0)
        print(f"train_detector: kept the starting weights {params.detector.weights}: no epoch beat their val "
              f"mAP50-95 ({metrics['map50_95']:.3f}; best epoch {trained:.3f}; detector.keep_better_start)")
    return metrics


def train_reid(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``train_reid``: ID cross-entropy + batch-hard triplet training on the prepared crops.

    Finetunes ``reid.weights`` (the ``pretrain_reid`` checkpoint by default; ``null``: from
    scratch). Writes ``models/reid/reid.pt``, ``metrics/reid.json`` (``rank1``, ``map`` on
    held-out ids, and the starting weights' for comparison) and ``reports/reid_training.png``.
    """
    from motops.training.reid import train_reid as run

    weights = params.reid.weights
    metrics = run(
        root / params.prepare.out_dir / "reid", params.reid, out_dir=root / "models" / "reid",
        metrics_path=root / "metrics" / "reid.json", plot_path=root / "reports" / "reid_training.png",
        max_steps=params.reid.max_steps,
        base_weights=None if weights is None else root / weights,  # an absolute path stays itself
    )
    start = "untrained" if weights is None else f"start {weights}"
    print(f"train_reid: held-out Rank-1 {metrics['rank1']:.3f}, mAP {metrics['map']:.3f} "
          f"({start}: {metrics['untrained_rank1']:.3f} / {metrics['untrained_map']:.3f})")
    if metrics["kept_start"]:
        print(f"train_reid: kept the starting weights: training scored a lower held-out mAP "
              f"({metrics['trained_map']:.3f}; reid.keep_better_start)")
    return metrics


def _write_json(path: Path, obj: dict) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def export(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``export``: ONNX + parity, INT8, TensorRT (or its recorded skip), the engine bundle.

    Writes ``export.engine_dir`` and ``metrics/export.json`` (parity, INT8 cost and speed-up).
    """
    from motops.export.run import export_engine

    report = export_engine(params, root)
    summary = {
        "detector_parity_min_iou": report["detector_parity"].get("min_iou"),
        "detector_parity_max_score_diff": report["detector_parity"].get("max_score_diff"),
        "reid_parity_min_cosine": report["reid_parity"].get("min_cosine"),
    }
    int8 = report["int8_reid"]
    if "speedup" in int8:
        summary.update(
            reid_int8_speedup=int8["speedup"], reid_int8_rank1_drop=int8["rank1_drop"],
            reid_int8_map_drop=int8["map_drop"], reid_int8_mean_cosine=int8["mean_cosine"],
        )
    summary["tensorrt_built"] = bool(report["tensorrt"].get("built"))
    # the full parity and INT8 reports are in the bundle's manifest (extra.parity, extra.int8)
    _write_json(root / "metrics" / "export.json", {**summary, "model_version": report["model_version"]})
    print(f"export: bundle {params.export.engine_dir} ({report['model_version']}); TensorRT: "
          f"{'built' if summary['tensorrt_built'] else report['tensorrt'].get('reason')}")
    return report


def evaluate(params: Params, root: Path = Path("."), user_track: dict | None = None) -> dict:
    """Stage ``evaluate``: sweep, track, score (TrackEval) and time the engine on the val sequences.

    Writes ``metrics/eval.json``, ``evaluate.out_dir`` (plots, tables, ``tracker.yaml``) and
    the scored release bundle ``evaluate.release_dir``. ``user_track``: the ``track:`` settings
    the user gave explicitly (``-S track.KEY=...``), which take effect over the bundle's
    ``tracker.yaml`` or are refused (see :func:`motops.evaluation.run.evaluate_engine`).
    """
    from motops.evaluation.run import evaluate_engine

    metrics = evaluate_engine(params, root, user_track=user_track)
    _write_json(root / "metrics" / "eval.json", metrics)
    print(f"evaluate: IDF1 {metrics['idf1']:.3f}, HOTA {metrics['hota']:.3f}, MOTA {metrics['mota']:.3f}, "
          f"IDSW {metrics['idsw']}, Frag {metrics['frag']}, {metrics['fps']:.1f} FPS ({metrics['backend']}); "
          f"threshold {metrics['threshold']}, NMS IoU {metrics['nms_iou']}, match {metrics['match_thresh']}; "
          f"appearance {'on' if metrics['appearance']['with_reid'] else 'off'} "
          f"({metrics['appearance']['reason']})")
    if user_track:
        given = (f"track.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in user_track.items())
        print(f"  over the bundle's tracker.yaml: {', '.join(given)}")
    for seq, m in metrics["sequences"].items():
        print(f"  {seq}: IDF1 {m['idf1']:.3f} HOTA {m['hota']:.3f} -- {m['diagnosis']}")
    return metrics


def gate(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``gate``: the rules of ``gates`` on ``metrics/eval.json``, against the current champion.

    With a champion and ``gates.same_run_fps``, the champion's bundle is downloaded and timed
    beside the release bundle on the same val frames (:func:`motops.evaluation.speed.paired_fps`);
    ``fps_regression`` compares those two figures. Writes ``metrics/gate.json``. A failed gate
    is a result, not an error: the stage succeeds and ``register`` then leaves the registry
    untouched.
    """
    import json

    from motops.registry.gates import evaluate_gate, format_gate_table
    from motops.registry.mlflow_registry import champion_metrics

    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    champion = champion_metrics(params.registry, root=root)
    same_run = None
    if champion is not None and params.gates.same_run_fps:
        same_run = _time_beside_champion(params, root, metrics["backend"])
    result = evaluate_gate(metrics, params.gates, backend=metrics["backend"], champion=champion,
                           same_run_fps=same_run)
    if same_run is not None:
        result["same_run_fps"] = same_run
    _write_json(root / "metrics" / "gate.json", result)
    print(("gate: PASSED" if result["passed"] else "gate: FAILED") + "\n" + format_gate_table(result))
    return result


def _time_beside_champion(params: Params, root: Path, backend: str) -> dict[str, Any]:
    """The release bundle and the champion's, timed in turns on the first val sequence (``gates.fps_*``).

    Both are loaded on ``backend``, the detector runtime the evaluation ran (``eval.json``), so the
    comparison is of two engines on one runtime.
    """
    import tempfile

    from motops.evaluation.run import val_sequence_folder
    from motops.evaluation.speed import paired_fps
    from motops.registry.mlflow_registry import download_bundle
    from motops.runtime.bundle import MANIFEST_FILE, manifest_digest

    with tempfile.TemporaryDirectory(prefix="motops-champion-") as tmp:
        champion_dir = download_bundle(f"models:/{params.registry.model_name}@champion", Path(tmp) / "champion",
                                       params.registry, root=root)
        source = val_sequence_folder(params, root)
        print(f"gate: timing the release bundle and the champion's in turns on {source} "
              f"({params.gates.fps_frames or 'all'} frames, {params.gates.fps_rounds} rounds each)")
        timed = paired_fps({"challenger": root / params.evaluate.release_dir, "champion": champion_dir}, source,
                           backend=backend, max_frames=params.gates.fps_frames, rounds=params.gates.fps_rounds)
        timed["champion_digest"] = manifest_digest(champion_dir / MANIFEST_FILE)
    timed["source"] = str(source)
    return timed


def register(params: Params, root: Path = Path(".")) -> dict:
    """Stage ``register``: one MLflow run with lineage; a new model version (alias ``challenger``) only on a pass.

    Writes ``metrics/register.json`` (run id, version, whether one was created, and why not).
    """
    import json

    from motops.config import flatten_params
    from motops.registry.gates import format_gate_table
    from motops.registry.lineage import lineage_tags, pseudo_tags
    from motops.registry.mlflow_registry import register as run

    gate_result = json.loads((root / "metrics" / "gate.json").read_text())
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    training = {}
    for name in ("detector", "reid", "export"):
        path = root / "metrics" / f"{name}.json"
        if path.is_file():
            training[name] = json.loads(path.read_text())
    plots = [p for p in (
        root / params.evaluate.out_dir / "sweep.png", root / params.evaluate.out_dir / "fps.png",
        root / "reports" / "reid_training.png", root / "reports" / "detector_training.png",
    ) if p.is_file()]
    result = run(
        root / params.evaluate.release_dir, gate=gate_result, metrics=metrics, training=training,
        params_flat=flatten_params(params), plots=plots, lineage={**lineage_tags(root), **pseudo_tags(params, root)},
        params=params.registry, root=root, checkpoints=[root / "models" / "detector" / "best.pt"],
    )
    _write_json(root / "metrics" / "register.json", result)
    if result.get("version") and result.get("created"):
        print(f"register: model '{params.registry.model_name}' version {result['version']} "
              f"with alias 'challenger' (run {result['run_id']})")
    elif result.get("version"):
        print(f"register: unchanged engine; version {result['version']} already registered, nothing created")
    else:
        print(f"register: nothing registered: {result.get('reason', 'gate failed')}\n{format_gate_table(gate_result)}")
    return result


STAGES: dict[str, Callable[[Params], object]] = {
    "pretrain": pretrain,
    "pretrain_reid": pretrain_reid,
    "synthesize": synthesize,
    "ingest": ingest,
    "validate": validate,
    "prepare": prepare,
    "train_detector": train_detector,
    "train_reid": train_reid,
    "export": export,
    "evaluate": evaluate,
    "gate": gate,
    "register": register,
}


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of one stage (``python stages/NAME.py``).

    Returns:
        The process exit code: 0 on success, 1 when the data failed validation,
        2 when the input or params were refused.
    """
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=STAGES[name].__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, args.set)
        if name == "evaluate":  # explicit track settings take effect over the bundle, or are refused
            from motops.cli_common import refuse_unused, user_settings
            from motops.evaluation.run import READS

            refuse_unused(args.set, READS, f"python stages/{name}.py")
            evaluate(params, user_track=user_settings("track", params.track, args.set))
        else:
            STAGES[name](params)
    except ValidationFailed as exc:
        print(f"{name}: FAILED\n{exc}", file=sys.stderr)
        return 1
    except MotopsError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


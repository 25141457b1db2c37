"""The ``motops`` command.

Every subcommand has ``--help``. Errors in the input are printed as one clear message
(file, line or key, and what was expected) with exit code 2; data that fails validation
exits with 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from motops.cli_common import ParamsOption, SetOption, fail, params_from
from motops.config import Params, SyntheticParams, dump_params
from motops.errors import ConfigError, MotopsError, ValidationFailed

app = typer.Typer(
    name="motops",
    help="Video multi-object tracking MLOps: footage -> validated data -> trained, gated, shipped engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (MOTChallenge layout: OUT/SEQ/img1, gt, seqinfo.ini).")],
    sequences: Annotated[int | None, typer.Option(help="Number of sequences.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per sequence.")] = None,
    width: Annotated[int | None, typer.Option(help="Image width, px.")] = None,
    height: Annotated[int | None, typer.Option(help="Image height, px.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives identical footage.")] = None,
    fps: Annotated[str | None, typer.Option(help="Frame rates, comma separated, cycled over sequences.")] = None,
    camera: Annotated[str | None, typer.Option(help="Camera motions (static, pan, jitter), cycled.")] = None,
    people: Annotated[str | None, typer.Option(help="People in view per sequence, comma separated, cycled.")] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Also write SEQ.mp4 per sequence.")] = False,
    name_prefix: Annotated[str | None, typer.Option(help="Sequence names PREFIX-01, ... (default: synth).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Write synthetic footage with MOT ground truth (defaults: data.synthetic in params.yaml)."""
    from motops.data.synthetic import synthesize

    try:
        base = params_from(params_file, overrides).data.synthetic.model_dump()
        given = {
            "sequences": sequences,
            "frames": frames,
            "width": width,
            "height": height,
            "seed": seed,
            "fps": _split(fps, float, "--fps"),
            "camera": _split(camera, str, "--camera"),
            "people": _split(people, int, "--people"),
            "write_video": video or None,
            "name_prefix": name_prefix,
        }
        settings = _validated_synthetic({**base, **{k: v for k, v in given.items() if v is not None}})
        folders = synthesize(out, settings)
    except MotopsError as exc:
        raise fail(exc, 2) from None
    typer.echo(f"wrote {len(folders)} sequences to {out}")


def _split(text: str | None, kind: type, flag: str) -> list | None:
    if text is None:
        return None
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None


def _validated_synthetic(values: dict) -> SyntheticParams:
    from pydantic import ValidationError

    try:
        return SyntheticParams.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"option {key!r}: {first['msg']} (got {first.get('input')!r})") from None


@app.command()
def ingest(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Normalize every source in data.sources into data/sequences and the parquet tables."""
    from motops import stages

    try:
        stages.ingest(params_from(params_file, overrides))
    except MotopsError as exc:
        raise fail(exc, 2) from None


@app.command()
def validate(
    data_dir: Annotated[
        Path | None,
        typer.Argument(help="A MOTChallenge folder (sequences or a dataset root). Omitted: the ingested data set."),
    ] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where the HTML data docs and summary.json go.")] = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Check every frame's image.")] = True,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Run the Great Expectations suites; exit 1 naming the first offending rows on failure."""
    import polars as pl

    from motops.data.mot import read_mot_dataset
    from motops.validation.run import check_or_raise, validate_dataset

    try:
        params = params_from(params_file, overrides)
        settings = params.validation.model_copy(update={"check_images": images and params.validation.check_images})
        if data_dir is None:
            sequences = pl.read_parquet(params.data.sequences_table)
            annotations = pl.read_parquet(params.data.annotations)
        else:
            sequences, annotations = read_mot_dataset(data_dir)
        out = report_dir or Path(params.validation.report_dir)
        report = validate_dataset(sequences, annotations, settings, report_dir=out)
        check_or_raise(report)
    except ValidationFailed as exc:
        typer.secho(f"validation FAILED\n{exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except (MotopsError, FileNotFoundError) as exc:
        raise fail(exc, 2) from None
    typer.echo(f"validation passed: {len(sequences)} sequences, {len(annotations)} boxes; report in {out}")


@app.command()
def track(
    source: Annotated[str, typer.Argument(help="A video file, a folder of frames (MOTChallenge img1/), or a URL.")],
    engine: Annotated[
        str | None,
        typer.Option(help="An engine bundle folder, or a registered one: models:/NAME@champion, models:/NAME/3. "
                          "Verified first; its tracker.yaml gives the settings you do not set yourself."),
    ] = None,
    detector: Annotated[
        Path | None, typer.Option(help="Without --engine: a detector model (YOLO .pt, .onnx, TensorRT .engine).")
    ] = None,
    reid: Annotated[
        Path | None,
        typer.Option(help="Without --engine: a ReID model (.onnx, TorchScript) for BoT-SORT's appearance; "
                          "omitted: motion only."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder: tracks.txt, annotated.mp4, summary.json.")] = Path(
        "runs/track"
    ),
    backend: Annotated[str | None, typer.Option(help="auto, torch, onnxruntime, tensorrt or openvino (default: "
                                                     "track.backend).")]
    = None,
    tracker: Annotated[str | None, typer.Option(help="bytetrack or botsort (default: track.tracker).")] = None,
    detect_every: Annotated[
        int | None, typer.Option(help="Run the detector every N-th frame, optical flow between (track.detect_every).")
    ] = None,
    imgsz: Annotated[
        int | None,
        typer.Option(help="Detector input size, px (default 640). A model exported with a fixed input size "
                          "(a bundle's, most ONNX/TensorRT files) runs only at its own size."),
    ] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write the annotated video.")] = True,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Track a video with a detector (+ optional ReID); write MOT results, an annotated video and a speed summary.

    The settings you give (--tracker, --detect-every, --backend, -S track.KEY=...) take effect over
    the bundle's tracker.yaml (with --engine) or params.yaml; one that cannot is refused, naming it.
    """
    import json

    try:
        summary = _track(source, engine=engine, detector=detector, reid=reid, out=out, backend=backend,
                         tracker=tracker, detect_every=detect_every, imgsz=imgsz, video=video, max_frames=max_frames,
                         params_file=params_file, overrides=overrides)
    except (MotopsError, FileNotFoundError) as exc:
        raise fail(exc, 2) from None
    except ValueError as exc:  # pydantic's ValidationError included
        raise fail(ConfigError(str(exc)), 2) from None
    latency = {k: round(v["p50"], 2) for k, v in summary["latency_ms"].items() if isinstance(v, dict) and "p50" in v}
    user = {k: summary["settings"][k] for k, v in summary["settings_from"].items() if v == "user"}
    typer.echo(json.dumps({"frames": summary["frames"], "fps": round(summary["fps"], 2), "p50_ms": latency,
                           "user_settings": user, "out": str(out)}, indent=2))


def _track(
    source: str, *, engine: str | None, detector: Path | None, reid: Path | None, out: Path, backend: str | None,
    tracker: str | None, detect_every: int | None, imgsz: int | None, video: bool, max_frames: int | None,
    params_file: Path, overrides: list[str] | None,
) -> dict:
    """``motops track``: every setting checked (taking effect or refused) before anything runs or is written."""
    from pydantic import ValidationError

    from motops.cli_common import refuse_unused, user_settings
    from motops.runtime.backends import BackendUnavailable, load_detector, load_reid
    from motops.runtime.runner import (
        SETTINGS,
        engine_with_settings,
        resolve_settings,
        track_source,
        tracker_params_from,
    )

    params = params_from(params_file, overrides)
    if (engine is None) == (detector is None):
        raise ConfigError("give exactly one of --engine DIR (a bundle) or --detector MODEL")
    registered = engine is not None and engine.startswith("models:/")
    refuse_unused(overrides, ("track", "registry") if registered else ("track",), "motops track")
    options = {"tracker": tracker, "detect_every": detect_every, "backend": backend}
    flags = {"tracker": "--tracker", "detect_every": "--detect-every", "backend": "--backend"}
    try:  # refuse bad option values as params.yaml's are
        checked = type(params.track).model_validate(
            {**params.track.model_dump(), **{k: v for k, v in options.items() if v is not None}}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0])
        raise ConfigError(f"{flags.get(key, key)} {first.get('input')}: {first['msg']}") from None
    user = user_settings("track", params.track, overrides)
    labels: dict[str, str] = {}
    for key, flag in flags.items():
        if options[key] is None:
            continue
        value = getattr(checked, key)
        if key in user and user[key] != value:
            raise ConfigError(f"{flag} {value} contradicts -S track.{key}={user[key]}; give one of them")
        user[key], labels[key] = value, f"{flag} {value}"
    if reid is not None:
        if engine is not None:
            raise ConfigError(f"--reid {reid}: with --engine the bundle's own ReID model is used; drop --reid "
                              "(-S track.with_reid=true turns the bundle's appearance on)")
        if user.get("with_reid") is False:
            raise ConfigError(f"--reid {reid} contradicts -S track.with_reid=false; give one of them")
        user["with_reid"], labels["with_reid"] = True, f"--reid {reid}"
    backend_name = user.pop("backend", None)
    settings = {k: v for k, v in user.items() if k in SETTINGS}
    backend_label = labels.get("backend", f"track.backend={backend_name or checked.backend}")

    if engine is not None:
        from motops.runtime.bundle import load_bundle

        if backend_name == "torch":
            raise ConfigError(f"{labels.get('backend', 'track.backend=torch')}: an engine bundle holds no torch "
                              "weights; use auto, onnxruntime, tensorrt or openvino")
        default = params.track.backend if params.track.backend != "torch" else "auto"  # params.yaml's, for .pt files
        folder = _engine_dir(engine, params)
        try:
            loaded = load_bundle(folder, backend=backend_name or default, max_map50_drop=checked.int8_max_map50_drop)
        except BackendUnavailable as exc:  # only backend='tensorrt' refuses to fall back
            raise ConfigError(f"{backend_label}: {exc}") from None
        if imgsz is not None and (imgsz, imgsz) != tuple(loaded.imgsz):
            h, w = loaded.imgsz
            raise ConfigError(f"--imgsz {imgsz}: the bundle's detector takes {h}x{w} (H x W), fixed when it was "
                              "exported; re-run export at that size (export.imgsz) or drop --imgsz")
        loaded = engine_with_settings(loaded, settings, labels=labels)
        run = loaded.track_kwargs()
        base = f"bundle {folder}"
    else:
        cfg = resolve_settings(
            params.track.model_dump(), settings, has_reid=reid is not None, labels=labels,
            no_reid="no ReID model was given; add --reid MODEL",
        )
        try:
            model = load_detector(detector, backend=checked.backend, imgsz=640 if imgsz is None else imgsz)
        except BackendUnavailable as exc:
            raise ConfigError(f"{backend_label}: {exc}") from None
        if imgsz is not None and (imgsz, imgsz) != tuple(model.imgsz):
            h, w = model.imgsz
            raise ConfigError(f"--imgsz {imgsz}: {detector} takes {h}x{w} (H x W), fixed when it was exported; "
                              "export it again at that size or drop --imgsz")
        appearance = cfg["tracker"] == "botsort" and cfg["with_reid"]
        run = {
            "detector": model,
            "reid": load_reid(reid, backend=checked.backend) if reid is not None and appearance else None,
            "tracker": cfg["tracker"],
            "tracker_params": tracker_params_from(cfg),
            "detect_every": cfg["detect_every"],
            "flow": cfg["flow"],
        }
        base = str(params_file) if params_file.exists() else "defaults"
    return track_source(source, out_dir=out, write_video=video, max_frames=max_frames, user_settings=list(settings),
                        settings_base=base, **run)


def _engine_dir(engine: str, params: Params) -> Path:
    """A bundle folder for ``--engine``: the folder itself, or a registered version downloaded and verified."""
    if not engine.startswith("models:/"):
        return Path(engine)
    from motops.registry.mlflow_registry import download_bundle

    safe = engine[len("models:/"):].replace("/", "_").replace("@", "_")
    return download_bundle(engine, Path("runs") / "registry" / safe, params.registry, root=Path.cwd())


bundle_app = typer.Typer(help="Engine bundles: the folder that is registered, tracked with and shipped.",
                         no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="The bundle folder (holds manifest.json).")],
) -> None:
    """Check every file of a bundle against its manifest (sha256, size, nothing extra); exit 1 naming bad files."""
    from motops.runtime.bundle import verify_bundle

    try:
        report = verify_bundle(path)
    except MotopsError as exc:
        raise fail(exc, 2) from None
    if not report.ok:
        typer.secho(f"bundle {path} FAILED verification:", fg=typer.colors.RED, err=True)
        for problem in report.problems:
            typer.secho(f"  {problem.file}: {problem.message}", err=True)
        raise typer.Exit(1)
    typer.echo(f"bundle {path}: {len(report.checked)} files verified")


@app.command()
def report(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Summarise what the last pipeline run produced and say where to look."""
    import json

    try:
        params = params_from(params_file, overrides)
    except MotopsError as exc:
        raise fail(exc, 2) from None
    summary_path = Path(params.validation.report_dir) / "summary.json"
    if not summary_path.is_file():
        typer.secho(f"no pipeline results yet ({summary_path} is missing): run `make pipeline`", err=True)
        raise typer.Exit(1)
    summary = json.loads(summary_path.read_text())
    stats, rows = summary["statistics"], summary["rows"]
    verdict = "passed" if summary["success"] else "FAILED"
    sources = ", ".join(_sources(params))
    typer.echo(f"data:        {rows['sequences']} sequences, {rows['annotations']} boxes ({sources})")
    typer.echo(f"validation:  {verdict}: {stats['successful']}/{stats['evaluated']} expectations met")
    metrics = Path("metrics")

    def load(name: str) -> dict | None:
        path = metrics / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    det, reid, ev, gate, reg = (load(n) for n in ("detector", "reid", "eval", "gate", "register"))
    if det:
        typer.echo(f"detector:    mAP50 {det['map50']:.3f}, mAP50-95 {det['map50_95']:.3f}, "
                   f"P {det['precision']:.3f}, R {det['recall']:.3f} ({det.get('start', '')})")
    if reid:
        typer.echo(f"reid:        held-out Rank-1 {reid['rank1']:.3f}, mAP {reid['map']:.3f}")
    if ev:
        typer.echo(f"tracking:    IDF1 {ev['idf1']:.3f}, HOTA {ev['hota']:.3f}, MOTA {ev['mota']:.3f}, "
                   f"IDSW {ev['idsw']}, Frag {ev['frag']}, {ev['fps']:.1f} FPS ({ev['backend']})")
    if gate:
        from motops.registry.gates import format_gate_table

        typer.echo(f"gate:        {'PASSED' if gate['passed'] else 'FAILED'}")
        typer.echo("\n".join("             " + line for line in format_gate_table(gate).splitlines()))
    if reg:
        if reg.get("version"):
            created = "registered" if reg.get("created") else "already registered (unchanged engine)"
            typer.echo(f"registry:    {params.registry.model_name} version {reg['version']} {created}, "
                       f"aliases {reg.get('aliases', [])}")
        else:
            typer.echo(f"registry:    nothing registered: {reg.get('reason', 'the gate failed')}")
    typer.echo("where to look:")
    typer.echo(f"  {summary['data_docs']}   Great Expectations data docs (open in a browser)")
    typer.echo(f"  {summary_path}   validation summary (also: dvc metrics show)")
    typer.echo(f"  {params.data.sequences_dir}/   the normalized footage (MOTChallenge layout)")
    if ev:
        typer.echo(f"  {params.evaluate.out_dir}/   sweep.png, fps.png, per-sequence tables (also: dvc plots show)")
        typer.echo(f"  {params.evaluate.release_dir}/   the scored engine bundle (motops track --engine ...)")
    if reg:
        typer.echo(f"  mlflow ui --backend-store-uri {params.registry.tracking_uri}   runs and registered models")
        typer.echo("  motops registry show   versions, aliases, gate tables, lineage as JSON")


@app.command()
def evaluate(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Score the exported engine on the val sequences (the `evaluate` stage): sweep, TrackEval, FPS, plots.

    The bundle's tracker.yaml decides how it tracks; -S track.KEY=... takes effect over it (and is kept in
    the scored release bundle), or is refused naming the key. Keys the stage does not read are refused.
    """
    from motops import stages
    from motops.cli_common import refuse_unused, user_settings
    from motops.evaluation.run import READS

    try:
        params = params_from(params_file, overrides)
        refuse_unused(overrides, READS, "motops evaluate")
        stages.evaluate(params, Path("."), user_track=user_settings("track", params.track, overrides))
    except MotopsError as exc:
        raise fail(exc, 2) from None


registry_app = typer.Typer(help="The MLflow model registry: versions, aliases, gate tables, lineage.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("show")
def registry_show(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Print JSON of the registered model's versions: aliases, gate tables, lineage tags."""
    import json

    from motops.registry.mlflow_registry import show

    try:
        registry = params_from(params_file, overrides).registry
        typer.echo(json.dumps(show(registry, root=Path.cwd()), indent=2, default=str))
    except MotopsError as exc:
        raise fail(exc, 2) from None


@app.command()
def promote(
    force: Annotated[bool, typer.Option(help="Promote even if the gate against the champion fails.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force; recorded as a tag).")] = None,
    rollback: Annotated[bool, typer.Option(help="Make the previous champion the champion again.")] = False,
    backend: Annotated[str, typer.Option(help="The FPS gate's backend.")] = "onnxruntime",
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Make the challenger the champion if it beats the champion's gate (or --force --reason); or --rollback."""
    import json

    from motops.registry import mlflow_registry as reg
    from motops.registry.gates import format_gate_table

    try:
        params = params_from(params_file, overrides)
        if rollback:
            result = reg.rollback(params.registry, root=Path.cwd())
        else:
            if force and not (reason or "").strip():
                raise ConfigError("--force needs --reason \"why\" (it is recorded on the model version)")
            result = reg.promote(params.registry, params.gates, backend=backend, force=force, reason=reason,
                                 root=Path.cwd())
    except reg.PromotionRefused as exc:
        typer.secho(f"not promoted: {exc}", fg=typer.colors.RED, err=True)
        typer.echo(format_gate_table(exc.gate), err=True)
        raise typer.Exit(1) from None
    except MotopsError as exc:
        raise fail(exc, 2) from None
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def schedule(
    repo: Annotated[Path, typer.Option(help="The project to retrain.")] = Path("."),
    cron: Annotated[str | None, typer.Option(help="Cron schedule (default: orchestration.retrain_cron).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Serve the retrain (cron), resign (fleet timestamps, every fleet.resign_interval_s), promote and publish
    deployments until stopped (Ctrl-C); runs show in the Prefect UI."""
    from motops.orchestration import serve_deployments

    try:
        params = params_from(params_file, overrides)
        serve_deployments(repo.resolve(), cron=cron or params.orchestration.retrain_cron,
                          resign_interval_s=params.fleet.resign_interval_s)
    except MotopsError as exc:
        raise fail(exc, 2) from None


def _sources(params: Params) -> list[str]:
    return [s if isinstance(s, str) else f"{s.format}:{s.path}" for s in params.data.sources]


@app.command("params")
def show_params(params_file: ParamsOption = Path("params.yaml"), overrides: SetOption = None) -> None:
    """Check the params file and print every key with its effective value."""
    try:
        typer.echo(dump_params(params_from(params_file, overrides)), nl=False)
    except MotopsError as exc:
        raise fail(exc, 2) from None


def _mount_fleet() -> None:
    from motops.fleet.cli import register as register_fleet

    register_fleet(app)


_mount_fleet()


#: Top-level modules of each optional extra (pyproject.toml): a command that needs one on an
#: install without that extra (an edge device) says which extra to add, in one line.
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "train": frozenset({
        "torch", "torchvision", "ultralytics", "onnx", "onnxslim", "prefect", "fastapi", "dvc", "mlflow",
        "flask_wtf", "polars", "pyarrow", "pandas", "great_expectations", "trackeval", "PIL", "matplotlib",
    }),
    "tensorrt": frozenset({"tensorrt", "cuda"}),
    "s3": frozenset({"dvc_s3"}),
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra whose module ``exc`` failed to import (``train``, ``tensorrt``, ``s3``), or ``None``."""
    top = (exc.name or "").split(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def main() -> None:
    """The ``motops`` console command: the CLI, with a missing extra reported in one line, not a traceback."""
    try:
        sys.exit(app())
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        command = " ".join(a for a in sys.argv[1:3] if not a.startswith("-")) or "this command"
        typer.secho(
            f"error: motops {command} needs the '{extra}' extra, which is not installed here (no module named "
            f"'{exc.name}'); install it with: pip install 'motops[{extra}]'",
            fg=typer.colors.RED, err=True,
        )
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()

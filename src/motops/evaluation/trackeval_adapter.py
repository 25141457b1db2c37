"""Score tracker output against MOTChallenge ground truth with TrackEval.

TrackEval (the PyPI ``trackeval`` 1.3.0 package, the reference implementation of
HOTA, CLEAR MOT and Identity metrics) only reads files laid out as a MOTChallenge
benchmark. :func:`score` takes tables (or folders), checks them, writes that
layout into a temporary folder::

    tmp/gt/<seq>/gt/gt.txt            frame,id,left,top,width,height,consider,class,visibility
    tmp/gt/<seq>/seqinfo.ini
    tmp/gt/seqmaps/<name>.txt         "name" then one sequence per line
    tmp/trackers/<tracker>/data/<seq>.txt   frame,id,left,top,width,height,conf,-1,-1,-1

runs ``trackeval.Evaluator`` with its printing, plots, summary files, error log
and process pool turned off, and returns plain numbers per sequence and combined.

TrackEval 1.3.0 from PyPI runs as is on numpy 2 (it no longer uses the removed
``np.float``/``np.int`` aliases), so nothing is patched; :func:`_import_trackeval`
is the one place a patch would go.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from motops.data.mot import (
    SeqInfo,
    find_mot_sequences,
    read_mot_sequence,
    read_mot_txt,
    write_mot_txt,
    write_seqinfo,
)
from motops.data.schema import MOT_CLASSES, PEDESTRIAN
from motops.errors import MotopsError

#: Name of the (only) tracker in the temporary TrackEval folder.
TRACKER_NAME = "motops"

#: Benchmark name TrackEval is told; decides which GT classes count as distractors.
DEFAULT_BENCHMARK = "MOT17"

#: IoU a prediction needs with a GT box to count as a match in CLEAR and Identity
#: (HOTA averages over its own thresholds 0.05..0.95). Raising it makes every
#: score stricter about box accuracy.
DEFAULT_IOU_THRESHOLD = 0.5

#: Columns a results table must have (ANNOTATION_SCHEMA tables have them all).
RESULT_COLUMNS: tuple[str, ...] = ("frame", "id", "left", "top", "width", "height")

#: Columns of a ground-truth table; ``conf``/``class``/``visibility`` default to 1 when absent.
GT_COLUMNS: tuple[str, ...] = (*RESULT_COLUMNS, "conf", "class", "visibility")

# ----------------------------------------------------------------- diagnosis rules

#: DetA below this: the detector (misses / false positives) is the main problem.
LOW_DETA = 0.40
#: Missed GT boxes (FN / GT boxes) above this: the detector misses too much, whatever DetA says.
HIGH_MISS_FRACTION = 0.30
#: MOTA at least this counts as "detection is fine" for the association rule.
HIGH_MOTA = 0.50
#: IDF1 this much below MOTA (or AssA this much below DetA): association is the problem.
ASSOCIATION_GAP = 0.10
#: Fragmentations per ground-truth track above this: tracks break (detector
#: dropouts or a confidence / track-buffer threshold set too tight).
FRAG_PER_TRACK = 1.0
#: Identity switches per ground-truth track above this: ids are swapped between people.
IDSW_PER_TRACK = 0.5


class EvaluationError(MotopsError):
    """Ground truth or results cannot be scored; the message names the sequence or file."""


@dataclass(frozen=True)
class SequenceMetrics:
    """Scores of one sequence (or of all sequences combined).

    Fractions are in ``[0, 1]`` (MOTA may be negative); counts are ints. Counts of
    ids are after TrackEval's preprocessing (distractors and ignored boxes removed).

    Attributes:
        sequence: Sequence name, or ``"COMBINED"``.
        hota: Higher Order Tracking Accuracy, mean over IoU thresholds 0.05..0.95.
        deta: Detection accuracy part of HOTA.
        assa: Association accuracy part of HOTA.
        mota: Multiple Object Tracking Accuracy (1 - (FN + FP + IDSW) / GT).
        motp: Mean IoU of matched boxes (TrackEval's definition, 1 is perfect).
        idf1: Identity F1 score.
        idsw: Identity switches.
        frag: Fragmentations (a tracked GT trajectory interrupted then resumed).
        mt: Mostly tracked GT ids (covered more than 80 % of their life).
        ml: Mostly lost GT ids (covered less than 20 %).
        gt_ids: Ground-truth identities scored.
        pred_ids: Predicted identities scored.
        fp: False positive boxes (CLEAR).
        fn: Missed GT boxes (CLEAR).
        gt_dets: GT boxes scored.
        pred_dets: Predicted boxes scored.
    """

    sequence: str
    hota: float
    deta: float
    assa: float
    mota: float
    motp: float
    idf1: float
    idsw: int
    frag: int
    mt: int
    ml: int
    gt_ids: int
    pred_ids: int
    fp: int
    fn: int
    gt_dets: int
    pred_dets: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON, MLflow or a table row)."""
        return asdict(self)


@dataclass(frozen=True)
class EvalResult:
    """What :func:`score` returns.

    Attributes:
        sequences: Scores per sequence, by name, in sorted order.
        combined: Scores of all sequences together (TrackEval's ``COMBINED_SEQ``).
        preprocessed: Whether MOTChallenge distractor preprocessing was applied.
        iou_threshold: IoU threshold of CLEAR and Identity.
        seconds: Wall time of the TrackEval call (layout writing included).
    """

    sequences: dict[str, SequenceMetrics]
    combined: SequenceMetrics
    preprocessed: bool
    iou_threshold: float
    seconds: float

    def to_frame(self) -> pl.DataFrame:
        """One row per sequence then a ``COMBINED`` row; columns as :class:`SequenceMetrics`."""
        rows = [m.as_dict() for m in (*self.sequences.values(), self.combined)]
        return pl.DataFrame(rows)

    def summary(self) -> dict[str, float | int]:
        """The combined scores without the ``sequence`` key (flat metrics for logging)."""
        out = self.combined.as_dict()
        out.pop("sequence")
        return out


# ----------------------------------------------------------------- input normalization

SeqInfoLike = SeqInfo | int


def _gt_from_folder(root: Path) -> tuple[dict[str, pl.DataFrame], dict[str, SeqInfoLike]]:
    folders = find_mot_sequences(root) if root.is_dir() else []
    if not folders:
        raise EvaluationError(
            f"{root}: no MOTChallenge sequences found; expected SEQ/gt/gt.txt and SEQ/seqinfo.ini "
            "directly under the folder or under train/, val/ or test/"
        )
    gt: dict[str, pl.DataFrame] = {}
    infos: dict[str, SeqInfoLike] = {}
    for folder in folders:
        seq, ann = read_mot_sequence(folder)
        name = seq["sequence"][0]
        if name in gt:
            raise EvaluationError(f"{folder}: sequence name '{name}' appears twice under {root}")
        gt[name] = ann
        infos[name] = int(seq["length"][0])
    return gt, infos


def _results_from_folder(root: Path, sequences: list[str]) -> dict[str, pl.DataFrame]:
    """Read ``<root>/<seq>.txt`` (or ``<root>/data/<seq>.txt``) for each GT sequence."""
    if not root.is_dir():
        raise EvaluationError(f"{root}: results folder not found; expected one <sequence>.txt per sequence")
    base = root / "data" if (root / "data").is_dir() and not any(root.glob("*.txt")) else root
    present = {p.stem for p in base.glob("*.txt")}
    missing = [s for s in sequences if s not in present]
    if missing:
        raise EvaluationError(
            f"{base}: no results for sequence(s) {', '.join(missing)}; expected "
            + ", ".join(f"{s}.txt" for s in missing)
        )
    return {s: read_mot_txt(base / f"{s}.txt", sequence=s, min_columns=6, allow_empty=True) for s in sequences}


def _where(table: pl.DataFrame, row: dict[str, Any], sequence: str, what: str) -> str:
    """'file:line' when the table came from a file, else 'sequence <name>'."""
    if "file" in table.columns and row.get("file"):
        line = row.get("line")
        return f"{row['file']}:{line}" if line is not None else str(row["file"])
    return f"{what} of sequence '{sequence}'"


def _check_table(
    table: pl.DataFrame, sequence: str, length: int, *, what: str, required: tuple[str, ...]
) -> pl.DataFrame:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise EvaluationError(f"{what} of sequence '{sequence}': missing columns {missing}; expected {list(required)}")
    if table.height == 0:
        return table
    numeric = [c for c in required if c in table.columns]
    bad = table.filter(~pl.all_horizontal([pl.col(c).cast(pl.Float64).is_finite() for c in numeric]))
    if bad.height:
        row = bad.row(0, named=True)
        raise EvaluationError(f"{_where(table, row, sequence, what)}: non-finite value in {numeric}: {row}")
    out_of_range = table.filter((pl.col("frame") < 1) | (pl.col("frame") > length))
    if out_of_range.height:
        row = out_of_range.row(0, named=True)
        raise EvaluationError(
            f"{_where(table, row, sequence, what)}: frame {int(row['frame'])} is outside 1..{length} "
            f"(seqLength of sequence '{sequence}'); {out_of_range.height} row(s) out of range"
        )
    dupes = table.filter(pl.struct("frame", "id").is_duplicated())
    if dupes.height:
        row = dupes.row(0, named=True)
        raise EvaluationError(
            f"{_where(table, row, sequence, what)}: id {int(row['id'])} appears more than once in frame "
            f"{int(row['frame'])} of sequence '{sequence}'; ids must be unique per frame"
        )
    return table


def _gt_with_defaults(table: pl.DataFrame) -> pl.DataFrame:
    defaults = {"conf": 1.0, "class": PEDESTRIAN, "visibility": 1.0}
    return table.with_columns(pl.lit(v).alias(c) for c, v in defaults.items() if c not in table.columns)


def _length(sequence: str, info: SeqInfoLike | None) -> int:
    if info is None:
        raise EvaluationError(
            f"no sequence length for sequence '{sequence}'; pass seqinfo={{'{sequence}': SeqInfo or seqLength}}"
        )
    length = info.length if isinstance(info, SeqInfo) else int(info)
    if length <= 0:
        raise EvaluationError(f"sequence '{sequence}': seqLength must be positive, got {length}")
    return length


def needs_preprocessing(gt: Mapping[str, pl.DataFrame]) -> bool:
    """Whether ground truth needs MOTChallenge distractor preprocessing.

    True when any row has a class other than pedestrian (1) or a consider flag
    (``conf`` column) of 0, as in MOT17/MOT20 ``gt.txt``.

    Args:
        gt: Ground-truth table per sequence.
    """
    for table in gt.values():
        if table.height == 0:
            continue
        if "class" in table.columns and (table["class"] != PEDESTRIAN).any():
            return True
        if "conf" in table.columns and (table["conf"] == 0).any():
            return True
    return False


# ----------------------------------------------------------------- TrackEval


def _import_trackeval() -> Any:
    """Import trackeval (heavy, optional at import time of this module)."""
    try:
        import trackeval
    except ImportError as exc:  # pragma: no cover - it is a pinned dependency
        raise EvaluationError(f"the 'trackeval' package is needed for scoring and is not importable: {exc}") from exc
    return trackeval


def _write_layout(
    tmp: Path,
    gt: dict[str, pl.DataFrame],
    results: dict[str, pl.DataFrame],
    lengths: dict[str, int],
    infos: Mapping[str, SeqInfoLike],
) -> tuple[Path, Path, Path]:
    gt_root = tmp / "gt"
    trackers_root = tmp / "trackers"
    data_dir = trackers_root / TRACKER_NAME / "data"
    data_dir.mkdir(parents=True)
    for seq, table in gt.items():
        info = infos.get(seq)
        if not isinstance(info, SeqInfo):
            info = SeqInfo(seq, "img1", 30.0, lengths[seq], 1920, 1080, ".jpg")
        write_seqinfo(gt_root / seq / "seqinfo.ini", info)
        write_mot_txt(gt_root / seq / "gt" / "gt.txt", table)
        _write_results_txt(data_dir / f"{seq}.txt", results[seq])
    seqmap = gt_root / "seqmaps" / "motops.txt"
    seqmap.parent.mkdir(parents=True)
    seqmap.write_text("name\n" + "".join(f"{s}\n" for s in gt), encoding="utf-8")
    return gt_root, trackers_root, seqmap


def _write_results_txt(path: Path, table: pl.DataFrame) -> None:
    """MOTChallenge results: frame,id,left,top,width,height,conf,-1,-1,-1 (all scored as pedestrians)."""
    if table.height == 0:
        path.write_text("", encoding="utf-8")
        return
    conf = pl.col("conf").cast(pl.Float64) if "conf" in table.columns else pl.lit(1.0)
    out = table.select(
        pl.col("frame").cast(pl.Int64),
        pl.col("id").cast(pl.Int64),
        *(pl.col(c).cast(pl.Float64) for c in ("left", "top", "width", "height")),
        conf.alias("conf"),
        pl.lit(-1).alias("x"),
        pl.lit(-1).alias("y"),
        pl.lit(-1).alias("z"),
    ).sort(["frame", "id"])
    out.write_csv(path, include_header=False)


def _hota_mean(res: Mapping[str, Any], key: str) -> float:
    return float(np.mean(res["HOTA"][key]))


def _metrics(name: str, res: Mapping[str, Any]) -> SequenceMetrics:
    clear, ident, count = res["CLEAR"], res["Identity"], res["Count"]
    return SequenceMetrics(
        sequence=name,
        hota=_hota_mean(res, "HOTA"),
        deta=_hota_mean(res, "DetA"),
        assa=_hota_mean(res, "AssA"),
        mota=float(clear["MOTA"]),
        motp=float(clear["MOTP"]),
        idf1=float(ident["IDF1"]),
        idsw=int(clear["IDSW"]),
        frag=int(clear["Frag"]),
        mt=int(clear["MT"]),
        ml=int(clear["ML"]),
        gt_ids=int(count["GT_IDs"]),
        pred_ids=int(count["IDs"]),
        fp=int(clear["CLR_FP"]),
        fn=int(clear["CLR_FN"]),
        gt_dets=int(count["GT_Dets"]),
        pred_dets=int(count["Dets"]),
    )


def score(
    gt: Mapping[str, pl.DataFrame] | str | Path,
    results: Mapping[str, pl.DataFrame] | str | Path,
    seqinfo: Mapping[str, SeqInfoLike] | None = None,
    *,
    preprocess: bool | Literal["auto"] = "auto",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    benchmark: str = DEFAULT_BENCHMARK,
    parallel: bool = False,
    num_cores: int = 2,
    verbose: bool = False,
    keep_dir: str | Path | None = None,
) -> EvalResult:
    """Score tracker results against ground truth with TrackEval (HOTA, CLEAR, Identity).

    Every ground-truth sequence is scored; results must cover exactly those
    sequences (an empty table means "the tracker output nothing").

    Args:
        gt: Ground-truth table per sequence (MOT columns ``frame, id, left, top,
            width, height`` and, as in ``gt.txt``, ``conf`` = consider flag,
            ``class``, ``visibility``; the last three default to 1), or a
            MOTChallenge dataset folder (read with ``seqinfo.ini`` lengths).
        results: Tracker output per sequence (columns ``frame, id, left, top,
            width, height`` and optionally ``conf``; boxes in pixels, frames
            1-based; every box is scored as a pedestrian), or a folder of
            ``<sequence>.txt`` MOTChallenge result files (or ``folder/data/``).
        seqinfo: Length of each sequence (a :class:`~motops.data.mot.SeqInfo` or
            its ``seqLength``). Needed when ``gt`` is a dict; for a folder it is
            read from ``seqinfo.ini`` and entries given here override it.
        preprocess: MOTChallenge preprocessing: predictions matching distractor
            GT (static person, reflection, …) are dropped and only considered
            pedestrians are scored. ``"auto"`` turns it on when the GT has a
            class other than 1 or a consider flag of 0; True/False force it.
            Without it, every GT row with a non-zero consider flag is scored.
        iou_threshold: Match IoU of CLEAR and Identity. Raising it makes them
            stricter about box accuracy; HOTA is unaffected (it averages
            thresholds 0.05..0.95).
        benchmark: TrackEval benchmark name (``MOT17``, ``MOT20``, ``MOT16``,
            ``MOT15``); MOT20 also treats non-motorized vehicles as distractors
            and MOT15 never preprocesses.
        parallel: Score sequences in a process pool (TrackEval's
            ``USE_PARALLEL``); worth it only for many long sequences.
        num_cores: Pool size when ``parallel``.
        verbose: Let TrackEval print its configuration and tables.
        keep_dir: Write the TrackEval layout here (kept) instead of a temporary folder.

    Returns:
        Per-sequence and combined scores.

    Raises:
        EvaluationError: a sequence without results (named), results for a
            sequence not in the GT, a missing sequence length, a frame beyond
            ``seqLength`` or below 1 (naming the sequence and, for files, the
            file and line), an id repeated in a frame, non-finite values, GT
            classes outside the MOTChallenge list with preprocessing, or a
            TrackEval failure.
        DataFormatError: a malformed file in a folder input.
    """
    started = time.perf_counter()
    if not (preprocess == "auto" or isinstance(preprocess, bool)):
        raise EvaluationError(f"preprocess must be 'auto', True or False, got {preprocess!r}")
    if not 0.0 < iou_threshold <= 1.0:
        raise EvaluationError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    infos: dict[str, SeqInfoLike] = {}
    if isinstance(gt, str | Path):
        gt_tables, infos = _gt_from_folder(Path(gt))
    else:
        gt_tables = dict(gt)
    if seqinfo is not None:
        infos.update(seqinfo)
    if not gt_tables:
        raise EvaluationError("no ground-truth sequences to score")
    sequences = sorted(gt_tables)

    if isinstance(results, str | Path):
        res_tables = _results_from_folder(Path(results), sequences)
    else:
        res_tables = dict(results)
        missing = [s for s in sequences if s not in res_tables]
        if missing:
            raise EvaluationError(
                f"no results for sequence(s) {', '.join(missing)}; the results cover "
                f"{', '.join(sorted(res_tables)) or 'no sequence'} (pass an empty table for a sequence "
                "where the tracker output nothing)"
            )
        extra = sorted(set(res_tables) - set(gt_tables))
        if extra:
            raise EvaluationError(
                f"results for sequence(s) {', '.join(extra)} have no ground truth; ground truth covers "
                f"{', '.join(sequences)}"
            )

    lengths = {s: _length(s, infos.get(s)) for s in sequences}
    for s in sequences:
        gt_tables[s] = _check_table(
            _gt_with_defaults(gt_tables[s]), s, lengths[s], what="ground truth", required=GT_COLUMNS
        )
        res_tables[s] = _check_table(res_tables[s], s, lengths[s], what="results", required=RESULT_COLUMNS)

    do_preproc = needs_preprocessing(gt_tables) if preprocess == "auto" else bool(preprocess)
    if do_preproc:
        for s in sequences:
            bad = gt_tables[s].filter(~pl.col("class").is_in(list(MOT_CLASSES)))
            if bad.height:
                row = bad.row(0, named=True)
                raise EvaluationError(
                    f"{_where(gt_tables[s], row, s, 'ground truth')}: class {row['class']} is not a MOTChallenge "
                    f"class ({min(MOT_CLASSES)}..{max(MOT_CLASSES)}); fix the GT or pass preprocess=False"
                )

    trackeval = _import_trackeval()
    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="motops-trackeval-")))
        else:
            tmp = Path(keep_dir)
            tmp.mkdir(parents=True, exist_ok=True)
        gt_root, trackers_root, seqmap = _write_layout(tmp, gt_tables, res_tables, lengths, infos)
        dataset_config = {
            "GT_FOLDER": str(gt_root),
            "TRACKERS_FOLDER": str(trackers_root),
            "OUTPUT_FOLDER": str(tmp / "output"),
            "TRACKERS_TO_EVAL": [TRACKER_NAME],
            "CLASSES_TO_EVAL": ["pedestrian"],
            "BENCHMARK": benchmark,
            "SPLIT_TO_EVAL": "train",
            "SKIP_SPLIT_FOL": True,
            "SEQMAP_FILE": str(seqmap),
            # explicit lengths: TrackEval then does not re-parse seqinfo.ini
            "SEQ_INFO": dict(lengths),
            "DO_PREPROC": do_preproc,
            "PRINT_CONFIG": verbose,
        }
        eval_config = {
            "USE_PARALLEL": parallel,
            "NUM_PARALLEL_CORES": num_cores,
            "BREAK_ON_ERROR": True,
            "LOG_ON_ERROR": None,
            "PRINT_RESULTS": verbose,
            "PRINT_ONLY_COMBINED": False,
            "PRINT_CONFIG": verbose,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_EMPTY_CLASSES": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
        }
        metric_config = {"THRESHOLD": iou_threshold, "PRINT_CONFIG": verbose}
        # TrackEval prints unconditionally ("Evaluating ...") and prints tracebacks before re-raising
        sink = io.StringIO()
        with contextlib.ExitStack() as quiet:
            if not verbose:
                quiet.enter_context(contextlib.redirect_stdout(sink))
                quiet.enter_context(contextlib.redirect_stderr(sink))
            try:
                evaluator = trackeval.Evaluator(eval_config)
                dataset = trackeval.datasets.MotChallenge2DBox(dataset_config)
                metrics = [
                    trackeval.metrics.HOTA(metric_config),
                    trackeval.metrics.CLEAR(metric_config),
                    trackeval.metrics.Identity(metric_config),
                ]
                output, messages = evaluator.evaluate([dataset], metrics)
            except trackeval.utils.TrackEvalException as exc:
                raise EvaluationError(f"TrackEval refused the input: {exc}") from exc
    per_tracker = output["MotChallenge2DBox"][TRACKER_NAME]
    if per_tracker is None:  # pragma: no cover - BREAK_ON_ERROR raises first
        raise EvaluationError(f"TrackEval failed: {messages['MotChallenge2DBox'][TRACKER_NAME]}")
    per_seq = {s: _metrics(s, per_tracker[s]["pedestrian"]) for s in sequences}
    combined = _metrics("COMBINED", per_tracker["COMBINED_SEQ"]["pedestrian"])
    return EvalResult(
        sequences=per_seq,
        combined=combined,
        preprocessed=do_preproc,
        iou_threshold=iou_threshold,
        seconds=time.perf_counter() - started,
    )


# ----------------------------------------------------------------- diagnosis


def _diagnose_one(m: SequenceMetrics) -> str:
    head = (
        f"{m.sequence}: HOTA {m.hota:.3f} DetA {m.deta:.3f} AssA {m.assa:.3f} "
        f"MOTA {m.mota:.3f} IDF1 {m.idf1:.3f} IDSW {m.idsw} Frag {m.frag}"
    )
    if m.gt_ids == 0:
        return f"{head} -> nothing to score: no ground-truth pedestrians"
    if m.pred_ids == 0:
        return f"{head} -> no tracks: the tracker output nothing (detector threshold or input broken)"
    miss_fraction = m.fn / max(m.gt_dets, 1)
    if m.deta < LOW_DETA or miss_fraction > HIGH_MISS_FRACTION:
        return (
            f"{head} -> detector: DetA {m.deta:.2f} (rule < {LOW_DETA}), {miss_fraction:.0%} of GT boxes missed "
            f"(rule > {HIGH_MISS_FRACTION:.0%}), {m.fp} false boxes; improve detections before tuning the tracker"
        )
    frag_rate = m.frag / m.gt_ids
    idsw_rate = m.idsw / m.gt_ids
    association_gap = max(m.mota - m.idf1, m.deta - m.assa)
    if m.mota >= HIGH_MOTA and association_gap > ASSOCIATION_GAP:
        return (
            f"{head} -> association: detection is fine (MOTA {m.mota:.2f}) but IDF1/AssA trail by "
            f"{association_gap:.2f} > {ASSOCIATION_GAP}; ids switch or split (match threshold, track buffer)"
        )
    if frag_rate > FRAG_PER_TRACK:
        return (
            f"{head} -> fragmentation: {frag_rate:.2f} fragments per GT track > {FRAG_PER_TRACK}; "
            "detections drop out (detector) or thresholds are too tight (confidence, track buffer)"
        )
    if idsw_rate > IDSW_PER_TRACK:
        return (
            f"{head} -> association: {idsw_rate:.2f} id switches per GT track > {IDSW_PER_TRACK}; "
            "tighten matching (IoU / match threshold)"
        )
    return f"{head} -> no dominant failure"


def diagnose(metrics: SequenceMetrics | EvalResult) -> str:
    """A one-line reading of the scores per sequence: where the errors come from.

    Rules, first match wins (thresholds are the module constants):
    no GT / no tracks; DetA < :data:`LOW_DETA` or more than :data:`HIGH_MISS_FRACTION`
    of GT boxes missed -> detector; MOTA >= :data:`HIGH_MOTA` with IDF1 (or AssA)
    more than :data:`ASSOCIATION_GAP` below MOTA (or DetA) -> association;
    fragments per GT track > :data:`FRAG_PER_TRACK` -> fragmentation (detector
    dropouts or thresholds); id switches per GT track > :data:`IDSW_PER_TRACK` ->
    association; otherwise no dominant failure.

    Args:
        metrics: One sequence's scores, or a whole :class:`EvalResult` (one line
            per sequence, then the combined line).

    Returns:
        The line(s), ``"\\n"``-separated.
    """
    if isinstance(metrics, EvalResult):
        return "\n".join(_diagnose_one(m) for m in (*metrics.sequences.values(), metrics.combined))
    return _diagnose_one(metrics)


#: Field names of :class:`SequenceMetrics`, in order (for tables and logging).
METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SequenceMetrics))

__all__ = [
    "EvalResult",
    "EvaluationError",
    "METRIC_FIELDS",
    "SequenceMetrics",
    "diagnose",
    "needs_preprocessing",
    "score",
]

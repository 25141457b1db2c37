"""Run the expectation suites of :mod:`motops.validation.suites` and report.

:func:`validate_dataset` runs one Great Expectations checkpoint per table in an
ephemeral (in-memory) data context whose only data docs site is
``report_dir/data_docs``; the data docs are built once, after the last checkpoint,
for this run's validation results (an ``UpdateDataDocsAction`` on each checkpoint
re-renders the index page every time and doubles the run time).

GX decides pass or fail and which rows offend: its ``SUMMARY`` result gives the
count and the positions of the first offending rows (``partial_unexpected_index_list``),
which are looked up in the polars table for their ``file``/``line``/``sequence``/
``frame``/``id``; the first ``max_examples`` go to ``report_dir/summary.json`` and
to :meth:`ValidationReport.summary_text`. GX's own ``unexpected_index_column_names``
is not used: it fetches every offending row's columns one ``DataFrame.at`` at a time
(about 1 ms a row and column, so a systematic error in a large dataset took minutes),
while positions cost nothing.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from motops.errors import ValidationFailed
from motops.validation import suites as S

if TYPE_CHECKING:
    import great_expectations as gx

#: Name of the one data docs site of the validation context.
DOCS_SITE = "motops"
#: Index page of the data docs, relative to ``report_dir``.
DOCS_INDEX = Path("data_docs") / "index.html"
#: The JSON summary, relative to ``report_dir``.
SUMMARY_FILE = "summary.json"
#: Keys of an offending row shown in the text summary, in this order.
_LOCATION_KEYS = ("sequence", "frame", "id")

_PARAM_NAMES = (
    "max_outside_fraction",
    "max_track_gap_s",
    "min_track_length",
    "classes",
    "check_images",
    "max_examples",
)


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_dataset`.

    Attributes:
        success: Every expectation that ran passed.
        report_dir: Folder holding ``summary.json`` and ``data_docs/index.html``.
        summary: The content of ``summary.json``.
    """

    success: bool
    report_dir: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def summary_path(self) -> Path:
        """``report_dir/summary.json``."""
        return self.report_dir / SUMMARY_FILE

    @property
    def data_docs_index(self) -> Path:
        """``report_dir/data_docs/index.html``."""
        return self.report_dir / DOCS_INDEX

    def failures(self) -> list[dict[str, Any]]:
        """Failed expectations, each with its ``suite`` name added."""
        return [
            {"suite": suite["suite"], "files": suite.get("files"), **exp}
            for suite in self.summary["suites"]
            for exp in suite["expectations"]
            if not exp["success"]
        ]

    def summary_text(self) -> str:
        """A short human summary naming the first offending rows of each failure.

        Rows read ``FILE:LINE (sequence S, frame F, id I)``; rows of tables
        without a line (images, sequences) read ``FILE (sequence S, …)``.
        """
        stats = self.summary["statistics"]
        skipped = [s for s in self.summary["suites"] if s["skipped"]]
        lines: list[str] = []
        if self.success:
            lines.append(
                f"Data validation passed: {stats['evaluated']} expectations on "
                f"{len(self.summary['suites']) - len(skipped)} tables."
            )
        else:
            lines.append(f"Data validation failed: {stats['failed']} of {stats['evaluated']} expectations failed.")
        failures = self.failures()
        # a missing column also breaks every other rule on it; name it once
        missing = {
            (f["suite"], f["kwargs"].get("column")) for f in failures if f["expectation"] == "expect_column_to_exist"
        }
        for failure in failures:
            if failure["expectation"] != "expect_column_to_exist" and (
                (failure["suite"], failure["kwargs"].get("column")) in missing
            ):
                continue
            lines.append(_failure_line(failure))
            if failure.get("files"):
                lines.append(f"    in {', '.join(failure['files'])}")
            lines.extend(f"    {format_row(row)}" for row in failure["examples"])
            shown = len(failure["examples"])
            count = failure["unexpected_count"] or 0
            if count > shown:
                lines.append(f"    … and {count - shown} more")
        lines.extend(f"skipped {s['suite']}: {s['reason']}" for s in skipped)
        lines.append(f"Data docs: {self.data_docs_index}")
        return "\n".join(lines)


def _failure_line(failure: dict[str, Any]) -> str:
    what = failure["description"] or failure["expectation"]
    if failure["exception"]:
        return f"{failure['suite']}: {what}: error: {failure['exception']}"
    count = failure["unexpected_count"]
    if count is None:
        observed = failure["observed_value"]
        tail = f" (observed {observed!r})" if observed is not None else ""
        return f"{failure['suite']}: {what}{tail}"
    total = failure["element_count"]
    return f"{failure['suite']}: {what}: {count} of {total} rows break it"


def format_row(row: dict[str, Any]) -> str:
    """``FILE:LINE (sequence S, frame F, id I)`` for one offending row.

    Keys that are absent or null are left out; the checked values, if any, follow.
    """
    file = row.get("file")
    line = row.get("line")
    where = f"{file}:{line}" if file is not None and line is not None else str(file)
    parts = [f"{k} {row[k]}" for k in _LOCATION_KEYS if row.get(k) is not None]
    text = f"{where} ({', '.join(parts)})" if parts else where
    known = {"file", "line", *_LOCATION_KEYS}
    extra = {k: v for k, v in row.items() if k not in known and v is not None}
    if extra:
        text += ": " + ", ".join(f"{k}={_short(v)}" for k, v in extra.items())
    return text


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- GX plumbing


def _context(docs_dir: Path) -> gx.data_context.EphemeralDataContext:
    """An in-memory GX context: no analytics, no progress bars, one docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and NA as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, int):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _domain_columns(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation checks, from its kwargs."""
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list", []))


def _examples(table: pl.DataFrame, name: str, kwargs: dict[str, Any], positions: list[Any]) -> list[dict[str, Any]]:
    """The offending rows at ``positions`` (0-based rows of ``table``), named and with their checked values."""
    rows = [int(p) for p in positions if isinstance(p, (int, float)) or hasattr(p, "__index__")]
    if not rows or table.height == 0:
        return []
    columns = [c for c in (*S.INDEX_COLUMNS[name], *_domain_columns(kwargs)) if c in table.columns]
    columns = list(dict.fromkeys(columns))
    return table.select(columns)[rows].to_dicts()


def _expectation_entry(result: Any, table: pl.DataFrame, name: str, max_examples: int) -> dict[str, Any]:
    """One expectation's outcome for ``summary.json``."""
    config = result.expectation_config
    res = result.result or {}
    info = result.exception_info or {}
    # exception_info is keyed by metric when several metrics failed
    infos = [info] if "raised_exception" in info else list(info.values())
    raised = [i for i in infos if isinstance(i, dict) and i.get("raised_exception")]
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    positions = (res.get("partial_unexpected_index_list") or [])[:max_examples]
    examples = _examples(table, name, kwargs, positions) if not result.success else []
    return {
        "expectation": config.type,
        "description": config.description,
        "kwargs": _jsonable(kwargs),
        "success": bool(result.success),
        "element_count": _jsonable(res.get("element_count")),
        "unexpected_count": _jsonable(res.get("unexpected_count")),
        "observed_value": _jsonable(res.get("observed_value")),
        "exception": raised[0].get("exception_message") if raised else None,
        "examples": _jsonable(examples),
    }


def _run_suite(
    context: Any,
    run_id: Any,
    name: str,
    suite: gx.ExpectationSuite,
    table: pl.DataFrame,
    max_examples: int,
) -> tuple[dict[str, Any], Any]:
    """Validate ``table`` with ``suite`` through a checkpoint.

    Returns:
        The suite's entry of ``summary.json`` and the validation result identifier.
    """
    import great_expectations as gx

    datasource = context.data_sources.get("motops")
    batch = datasource.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    # the data docs show this many offending values; the summary keeps max_examples
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(max_examples, 20)}
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"motops_{name}",
            validation_definitions=[definition],
            result_format=result_format,
        )
    )
    started = time.perf_counter()
    # a RangeIndex: GX's unexpected positions are rows of `table`
    outcome = checkpoint.run(batch_parameters={"dataframe": table.to_pandas()}, run_id=run_id)
    ((identifier, validation),) = outcome.run_results.items()
    entries = [_expectation_entry(r, table, name, max_examples) for r in validation.results]
    return {
        "suite": name,
        "skipped": False,
        "reason": None,
        "rows": table.height,
        "success": bool(validation.success),
        "seconds": round(time.perf_counter() - started, 3),
        "expectations": entries,
    }, identifier


def _skipped(name: str, reason: str) -> dict[str, Any]:
    return {
        "suite": name,
        "skipped": True,
        "reason": reason,
        "rows": None,
        "success": None,
        "seconds": 0.0,
        "expectations": [],
    }


# --------------------------------------------------------------------------- entry points


def validate_dataset(
    sequences: pl.DataFrame,
    annotations: pl.DataFrame,
    params: S.ValidationParamsLike,
    *,
    report_dir: Path,
    progress: bool | None = None,
) -> ValidationReport:
    """Validate the normalized tables and write the report.

    Runs the suites of :mod:`motops.validation.suites` in this order: the two
    schema suites; then, when both pass, ``annotations``, ``tracks``,
    ``sequences`` and (when ``params.check_images``) ``frames``. A suite that
    cannot run is recorded as skipped with its reason. Failed expectations do not
    raise; see :func:`check_or_raise`.

    Args:
        sequences: Table in ``SEQUENCE_SCHEMA`` (one row per sequence).
        annotations: ``(N, 12)`` table in ``ANNOTATION_SCHEMA``.
        params: A ``ValidationParams`` (any object with its attributes).
        report_dir: Output folder; ``data_docs/`` in it is replaced.
        progress: Show a progress bar while checking images; None: on a terminal.

    Returns:
        The :class:`ValidationReport`; ``report_dir/summary.json`` holds its
        ``summary`` and ``report_dir/data_docs/index.html`` the GX data docs.
    """
    import great_expectations as gx

    started = time.perf_counter()
    report_dir = Path(report_dir)
    docs_dir = (report_dir / DOCS_INDEX.parent).resolve()  # GX wants an absolute site folder
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    max_examples = int(params.max_examples)

    context = _context(docs_dir)
    context.data_sources.add_pandas("motops")
    run_id = gx.RunIdentifier(run_name="motops-validate", run_time=datetime.now(UTC))

    identifiers: list[Any] = []

    def run(name: str, suite: gx.ExpectationSuite, table: pl.DataFrame) -> dict[str, Any]:
        entry, identifier = _run_suite(context, run_id, name, suite, table, max_examples)
        identifiers.append(identifier)
        return entry

    results = [
        run("annotations_schema", S.annotations_schema_suite(), S.schema_table(annotations)),
        run("sequences_schema", S.sequences_schema_suite(), S.schema_table(sequences)),
    ]
    # a schema table has no rows to point at: name the files the table came from
    for entry, table, column in ((results[0], annotations, "file"), (results[1], sequences, "path")):
        if column in table.columns:
            entry["files"] = sorted(str(f) for f in table[column].drop_nulls().unique().to_list())[:max_examples]
    planned: list[tuple[str, Callable[[], dict[str, Any]] | str]]
    if all(r["success"] for r in results):
        known = sequences["sequence"].drop_nulls().unique().to_list()
        planned = [
            (
                "annotations",
                lambda: run(
                    "annotations",
                    S.annotations_suite(params, known),
                    S.annotation_table(annotations, sequences),
                ),
            ),
            ("tracks", lambda: run("tracks", S.tracks_suite(params), S.track_table(annotations, sequences))),
            (
                "sequences",
                lambda: run("sequences", S.sequences_suite(), S.sequence_check_table(sequences, annotations)),
            ),
            (
                "frames",
                (lambda: run("frames", S.frames_suite(), S.frame_table(sequences, progress=progress)))
                if params.check_images
                else "check_images is false",
            ),
        ]
    else:
        reason = "the schema suites failed; fix the columns first"
        planned = [(name, reason) for name in ("annotations", "tracks", "sequences", "frames")]
    for name, job in planned:
        results.append(_skipped(name, job) if isinstance(job, str) else job())

    context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=identifiers)
    ran = [e for r in results for e in r["expectations"]]
    failed = sum(not e["success"] for e in ran)
    summary: dict[str, Any] = {
        "success": failed == 0,
        "statistics": {"evaluated": len(ran), "successful": len(ran) - failed, "failed": failed},
        "report_dir": str(report_dir),
        "data_docs": str(report_dir / DOCS_INDEX),
        "great_expectations": gx.__version__,
        "seconds": round(time.perf_counter() - started, 3),
        "params": _jsonable({k: getattr(params, k) for k in _PARAM_NAMES}),
        "rows": {"sequences": sequences.height, "annotations": annotations.height},
        "suites": results,
    }
    (report_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return ValidationReport(success=summary["success"], report_dir=report_dir, summary=summary)


def check_or_raise(report: ValidationReport) -> None:
    """Refuse a dataset that failed validation.

    Raises:
        ValidationFailed: ``report.success`` is false; its message is
            :meth:`ValidationReport.summary_text`.
    """
    if not report.success:
        raise ValidationFailed(report.summary_text(), report.report_dir)

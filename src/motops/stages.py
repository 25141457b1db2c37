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


STAGES: dict[str, Callable[[Params], object]] = {
    "synthesize": synthesize,
    "ingest": ingest,
    "validate": validate,
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
        STAGES[name](load_params(args.params, args.set))
    except ValidationFailed as exc:
        print(f"{name}: FAILED\n{exc}", file=sys.stderr)
        return 1
    except MotopsError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0


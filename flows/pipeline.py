"""Prefect flow ``pipeline``: the DVC stages of ``dvc.yaml``, one Prefect task each.

The stages' logic lives in ``motops.stages`` and runs through DVC (its Python API), so a
flow run and ``dvc repro`` do the same work, skip the same unchanged stages and write the
same ``dvc.lock``. Prefect adds what DVC does not: retries and timeouts per stage (from
``orchestration`` in ``params.yaml``), logs, and a run history in the Prefect UI.

Run it:
    python flows/pipeline.py                 # against Prefect's local API (or PREFECT_API_URL)
    python flows/pipeline.py --stage validate
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger, task

from motops.config import load_params


def stage_order(repo_dir: str | Path) -> list[str]:
    """Names of the ``dvc.yaml`` stages in an order that runs every stage after its inputs."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with contextlib.chdir(repo_dir), Repo(".") as repo:
        graph = repo.index.graph  # edges run from a stage to the stages it depends on
        return [node.name for node in nx.dfs_postorder_nodes(graph) if isinstance(node, PipelineStage)]


@contextlib.contextmanager
def _this_python_first() -> Iterator[None]:
    """Put this interpreter's folder first on PATH, so the stages' ``python`` is the one running the flow."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


def reproduce_stage(repo_dir: str | Path, stage: str) -> bool:
    """Reproduce one stage with DVC (its inputs must be up to date); True when it ran, False when cached."""
    from dvc.repo import Repo

    # DVC resolves a stage's paths against the working directory, as its CLI runs at the repo root
    with _this_python_first(), contextlib.chdir(repo_dir), Repo(".") as repo:
        ran = repo.reproduce(stage, single_item=True)
    return bool(ran)


@flow(name="pipeline", log_prints=True)
def pipeline(repo_dir: str = ".", stages: list[str] | None = None, params_file: str = "params.yaml") -> dict[str, bool]:
    """Run the DVC stages in order, each as a Prefect task with retries and a timeout.

    Args:
        repo_dir: The project (a git + DVC repository).
        stages: Only these stages (and in this order); default: all of ``dvc.yaml``.
        params_file: The params file, relative to ``repo_dir``.

    Returns:
        Stage name -> whether it ran (False: DVC found it up to date).
    """
    settings = load_params(Path(repo_dir) / params_file).orchestration
    run = task(
        reproduce_stage,
        name="dvc-stage",
        retries=settings.retries,
        retry_delay_seconds=settings.retry_delay_s,
        timeout_seconds=settings.stage_timeout_s,
    )
    order = stages or stage_order(repo_dir)
    logger = get_run_logger()
    done: dict[str, bool] = {}
    for name in order:
        done[name] = run.with_options(task_run_name=f"stage-{name}")(repo_dir, name)
        logger.info("stage %s: %s", name, "ran" if done[name] else "up to date")
    return done


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    args = parser.parse_args()
    pipeline(repo_dir=args.repo, stages=args.stage)

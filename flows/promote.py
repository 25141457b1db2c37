"""Prefect flow ``promote``: the registry's ``challenger`` becomes ``champion`` only if it passes the gate.

The gate is the same rules as the ``gate`` stage (``gates`` in params.yaml) applied to the
challenger's metrics against the current champion's. ``force=True`` needs a ``reason``, which
is recorded on the model version. ``rollback=True`` restores the ``previous`` champion.

Run it once:  python flows/promote.py [--force --reason "..."] [--rollback]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, get_run_logger

from motops.config import load_params


@flow(name="promote", log_prints=True)
def promote(repo_dir: str = ".", params_file: str = "params.yaml", force: bool = False, reason: str | None = None,
            rollback: bool = False, backend: str = "onnxruntime") -> dict:
    """Promote the challenger (or roll back); returns what moved (see ``motops.registry.mlflow_registry.promote``)."""
    from motops.registry import mlflow_registry as reg

    params = load_params(Path(repo_dir) / params_file)
    logger = get_run_logger()
    if rollback:
        result = reg.rollback(params.registry, root=Path(repo_dir))
    else:
        result = reg.promote(params.registry, params.gates, backend=backend, force=force, reason=reason,
                             root=Path(repo_dir))
    logger.info("promote: %s", json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--reason")
    parser.add_argument("--rollback", action="store_true")
    args = parser.parse_args()
    print(json.dumps(promote(repo_dir=args.repo, force=args.force, reason=args.reason, rollback=args.rollback),
                     indent=2, default=str))

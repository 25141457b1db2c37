"""Serving the Prefect deployments of ``flows/`` (``motops schedule``).

The flows live in the project's ``flows/`` folder (``retrain``, ``promote``, ``publish``,
``pipeline``, ``resign``); this loads them by entrypoint and serves them from this process:
``retrain`` on the cron schedule, ``resign`` (the fleet channels' TUF timestamp) every
``fleet.resign_interval_s``, the others on demand (``prefect deployment run 'promote/promote'``).
``prefect.yaml`` declares the same deployments for a Prefect server with work pools
(``prefect deploy --all``).
"""

from __future__ import annotations

from pathlib import Path

from motops.errors import ConfigError

#: Deployment name -> (entrypoint relative to the project, schedule: "cron", "interval" or None).
DEPLOYMENTS = {
    "retrain": ("flows/retrain.py:retrain", "cron"),
    "promote": ("flows/promote.py:promote", None),
    "publish": ("flows/publish.py:publish", None),
    "pipeline": ("flows/pipeline.py:pipeline", None),
    "resign": ("flows/resign.py:resign", "interval"),
}


def build_deployments(repo: Path, *, cron: str, resign_interval_s: float = 3600.0) -> list:
    """The runner deployments of :data:`DEPLOYMENTS` for the project at ``repo``.

    Args:
        repo: The project folder.
        cron: The retrain schedule (``orchestration.retrain_cron``).
        resign_interval_s: Seconds between runs of ``resign`` (``fleet.resign_interval_s``).

    Raises:
        ConfigError: A flow file is missing or the cron expression is invalid.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ConfigError(f"orchestration.retrain_cron: {cron!r} is not a cron expression (e.g. '0 3 * * 1')") from None
    deployments = []
    for name, (entrypoint, scheduled) in DEPLOYMENTS.items():
        path = repo / entrypoint.split(":")[0]
        if not path.is_file():
            raise ConfigError(f"{path}: flow file not found (is {repo} the motops project?)")
        flow = load_flow_from_entrypoint(f"{path}:{entrypoint.split(':')[1]}")
        deployments.append(
            flow.to_deployment(
                name=name,
                cron=cron if scheduled == "cron" else None,
                interval=resign_interval_s if scheduled == "interval" else None,
                parameters={"repo_dir": str(repo)},
                tags=["motops"],
                description=(flow.description or "").strip().splitlines()[0] if flow.description else None,
            )
        )
    return deployments


def serve_deployments(repo: Path, *, cron: str, resign_interval_s: float = 3600.0) -> None:  # pragma: no cover
    """Serve the deployments until interrupted."""
    from prefect import serve

    serve(*build_deployments(repo, cron=cron, resign_interval_s=resign_interval_s))

"""Prefect flow ``publish``: the registry's champion engine -> the fleet bucket, signed, then the channel pointer.

Downloads ``models:/NAME@champion`` (verified against its registered digest), uploads every
file to ``s3://BUCKET/PREFIX/NAME/VERSION/`` (resuming: finished files are not uploaded
again), writes the signed manifest, and moves ``channels/CHANNEL.json`` last, so a crash at
any step leaves the fleet on the previous release. Endpoint, bucket, prefix, channel and key
come from ``fleet`` in params.yaml or the environment (see README "Edge fleet").

Run it once:  python flows/publish.py [--model-uri models:/NAME@champion]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, get_run_logger

from motops.config import load_params


@flow(name="publish", log_prints=True, retries=2, retry_delay_seconds=30)
def publish(repo_dir: str = ".", params_file: str = "params.yaml", model_uri: str | None = None,
            channel: str | None = None) -> dict:
    """Publish the champion (or ``model_uri``); returns the pointer written (see ``motops.fleet.publish_model``)."""
    from motops.fleet.publish import publish_model

    params = load_params(Path(repo_dir) / params_file)
    logger = get_run_logger()
    result = publish_model(params, model_uri=model_uri, channel=channel, root=Path(repo_dir),
                           on_progress=lambda event, item: logger.info("%s: %s", event, item))
    logger.info("published %s version %s to channel %s", result.get("name"), result.get("version"),
                result.get("channel"))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--model-uri")
    parser.add_argument("--channel")
    args = parser.parse_args()
    print(json.dumps(publish(repo_dir=args.repo, model_uri=args.model_uri, channel=args.channel), indent=2,
                     default=str))

"""Prefect flow ``resign``: re-sign each channel's TUF timestamp (and snapshot/targets near expiry) on a schedule.

Devices refuse a channel whose signed timestamp has expired (``fleet.timestamp_expiry_s``, 6 h
by default): that is what defeats a mirror that keeps serving an old release (a freeze attack).
This deployment runs every ``fleet.resign_interval_s`` (1 h) so a healthy channel never expires.
It needs the online timestamp key (``fleet.timestamp_key`` or ``fleet.signing_key``); snapshot
and targets are re-signed when half their lifetime is gone (the targets need ``signing_key``).

Run it once:  python flows/resign.py [--channel stable --channel beta]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow

from motops.config import load_params


@flow(name="resign", log_prints=True, retries=2, retry_delay_seconds=60)
def resign(repo_dir: str = ".", params_file: str = "params.yaml", channels: list[str] | None = None) -> dict:
    """Re-sign ``channels`` (default: ``fleet.channel``); returns ``{channel: versions + resigned}``."""
    from motops.fleet.repository import Repository

    fleet = load_params(Path(repo_dir) / params_file).fleet
    results = {}
    for channel in channels or [fleet.channel]:
        results[channel] = Repository(fleet, channel).resign()
        print(f"channel {channel}: re-signed {', '.join(results[channel]['resigned'])}; timestamp "
              f"v{results[channel]['timestamp_version']} expires {results[channel]['timestamp_expires']}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--channel", action="append")
    args = parser.parse_args()
    print(json.dumps(resign(repo_dir=args.repo, channels=args.channel), indent=2, default=str))

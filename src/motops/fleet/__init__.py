"""Shipping engines to edge devices: publish to an S3 bucket under The Update Framework, the edge agent.

* :func:`~motops.fleet.publish.publish_bundle` uploads a verified bundle, then signs it into the
  channel's TUF metadata (targets, snapshot, and -- last -- timestamp).
* :class:`~motops.fleet.repository.Repository` is one channel's TUF repository: init, rotate
  keys (revoking the ones left out), re-sign the timestamp.
* :class:`~motops.fleet.agent.EdgeAgent` follows the channel with python-tuf's updater over S3
  (bounded reads, a deadline), verifies, switches ``current`` atomically and rolls back.
* :mod:`motops.fleet.signing` makes and loads Ed25519 key files.
* :mod:`motops.fleet.cli` holds the ``motops publish``, ``motops fleet ...`` and ``motops edge ...`` commands.

Importing this package opens no client and reads no environment; boto3 is imported when used.
"""

from __future__ import annotations

from motops.fleet.agent import EdgeAgent
from motops.fleet.fetcher import SyncDeadlineError
from motops.fleet.publish import publish_bundle
from motops.fleet.repository import Repository, Signers
from motops.fleet.signing import SigningKeyError, generate_keypair, load_private_key, load_public_key
from motops.fleet.store import FleetError, StaleVersionError, VerificationError, with_env_overrides

__all__ = [
    "EdgeAgent",
    "FleetError",
    "Repository",
    "Signers",
    "SigningKeyError",
    "StaleVersionError",
    "SyncDeadlineError",
    "VerificationError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "publish_bundle",
    "with_env_overrides",
]

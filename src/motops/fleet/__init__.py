"""Shipping engines to edge devices: publish to an S3 bucket with signed manifests, the edge agent.

* :func:`~motops.fleet.publish.publish_bundle` uploads a verified bundle, its manifest and
  signature, and then -- last -- moves the channel pointer.
* :class:`~motops.fleet.agent.EdgeAgent` follows the pointer, verifies (signature, digest, sizes,
  sha256), switches ``current`` atomically and rolls back.
* :mod:`motops.fleet.signing` makes Ed25519 keys and signs/verifies releases.
* :mod:`motops.fleet.cli` holds the ``motops publish`` and ``motops edge ...`` commands.

Importing this package opens no client and reads no environment; boto3 is imported when used.
"""

from __future__ import annotations

from motops.fleet.agent import EdgeAgent
from motops.fleet.publish import publish_bundle, read_pointer
from motops.fleet.signing import (
    SignatureError,
    SigningKeyError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_release,
    verify_release,
)
from motops.fleet.store import FleetError, StaleVersionError, VerificationError, with_env_overrides

__all__ = [
    "EdgeAgent",
    "FleetError",
    "SignatureError",
    "SigningKeyError",
    "StaleVersionError",
    "VerificationError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "publish_bundle",
    "read_pointer",
    "sign_release",
    "verify_release",
    "with_env_overrides",
]

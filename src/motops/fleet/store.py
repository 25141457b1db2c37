"""What the publisher and the edge agent share: the bucket layout, the S3 client, errors, version order.

Bucket layout (``PREFIX`` is ``fleet.prefix``; see :mod:`motops.fleet.repository` for the metadata)::

    PREFIX/NAME/VERSION/<bundle file>      every file the manifest lists (sha256 in the object metadata)
    PREFIX/NAME/VERSION/manifest.json      the bundle's manifest, byte for byte
    PREFIX/tuf/CHANNEL/...                 the channel's TUF metadata (root chain, targets, snapshot, timestamp)

Nothing here opens a client or reads the environment at import time.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Final

from motops.config import FleetParams
from motops.errors import MotopsError

#: Key in every signed metadata part naming the channel it was signed for.
CHANNEL_FIELD: Final = "x-motops-channel"
#: Key in signed timestamp/snapshot/targets: when it was signed (UTC ISO-8601), for ``edge status``'s age.
ISSUED_FIELD: Final = "x-motops-issued"
SHA256_METADATA: Final = "sha256"
#: Environment variable -> FleetParams field; a set, non-empty variable wins over params.yaml.
ENV_OVERRIDES: Final = {
    "MOTOPS_FLEET_ENDPOINT_URL": "endpoint_url",
    "MOTOPS_FLEET_BUCKET": "bucket",
    "MOTOPS_FLEET_PREFIX": "prefix",
    "MOTOPS_FLEET_CHANNEL": "channel",
    "MOTOPS_SIGNING_KEY": "signing_key",
    "MOTOPS_TIMESTAMP_KEY": "timestamp_key",
    "MOTOPS_PUBLIC_KEY": "public_key",
    "MOTOPS_TRUSTED_ROOT": "trusted_root",
    "MOTOPS_EDGE_DIR": "install_dir",
}
_SESSIONS: dict[tuple[str | None, ...], Any] = {}
_SESSION_LOCK = threading.Lock()
_CREDENTIAL_ENV: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_NUMERIC = re.compile(r"\d+(?:\.\d+)*")


class FleetError(MotopsError):
    """Publishing or syncing failed (the message names the object, file or setting, and what was expected)."""


class VerificationError(FleetError):
    """A release or its metadata failed a check (signature, expiry, channel, size, sha256); nothing was switched.

    Attributes:
        version: The version that was refused.
        files: Offending file names (bundle-relative), empty when the problem is the signature or pointer.
    """

    def __init__(self, message: str, *, version: str | None = None, files: list[str] | None = None) -> None:
        self.version = version
        self.files = list(files or [])
        super().__init__(message)


class StaleVersionError(FleetError):
    """The channel points at a version older than (or not comparable with) the installed one."""


def with_env_overrides(params: FleetParams, environ: Mapping[str, str] | None = None) -> FleetParams:
    """``params`` with the fields named in :data:`ENV_OVERRIDES` replaced by set environment variables.

    Args:
        params: The ``fleet`` section of the params.
        environ: The environment (default ``os.environ``).

    Returns:
        A new, validated :class:`~motops.config.FleetParams`.
    """
    environ = os.environ if environ is None else environ
    update = {field: environ[var] for var, field in ENV_OVERRIDES.items() if environ.get(var)}
    if not update:
        return params
    return FleetParams.model_validate({**params.model_dump(), **update})


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one S3 key segment and one folder name, else raise.

    Raises:
        FleetError: Empty, too long, a path separator, ``..``, or characters other than letters,
            digits and ``._+-`` (it must start with a letter or digit).
    """
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or ".." in value:
        raise FleetError(
            f"{what} {value!r}: expected 1-128 letters, digits or '._+-', starting with a letter or digit "
            "(it becomes part of an S3 key and a folder name)"
        )
    return value


def object_key(params: FleetParams, *parts: str) -> str:
    """``PREFIX/part/part...`` (no leading slash; an empty prefix is allowed)."""
    prefix = params.prefix.strip("/")
    return "/".join(p for p in (prefix, *parts) if p)


def release_key(params: FleetParams, name: str, version: str, filename: str = "") -> str:
    """Key of ``filename`` of release ``name``/``version`` (the release prefix when ``filename`` is empty)."""
    return object_key(params, name, version, filename) if filename else object_key(params, name, version) + "/"


def metadata_key(params: FleetParams, channel: str, filename: str = "") -> str:
    """Key of ``PREFIX/tuf/CHANNEL/filename`` (the channel's TUF repository; its prefix when ``filename`` is empty)."""
    return object_key(params, "tuf", check_segment(channel, "channel"), filename) + ("" if filename else "/")


def s3_client(params: FleetParams) -> Any:
    """A boto3 S3 client for ``params`` with retries (exponential backoff) and timeouts.

    Path-style addressing is used with an explicit ``endpoint_url`` (MinIO, moto, Ceph need it);
    credentials and ``AWS_REGION`` come from boto3's usual sources.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": params.max_attempts, "mode": "standard"},
        connect_timeout=params.timeout_s,
        read_timeout=params.timeout_s,
        s3={"addressing_style": "path"} if params.endpoint_url else {},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or params.region
    with _SESSION_LOCK:  # a boto3 Session is not thread-safe; its clients are
        # One session per process and credential environment: it caches the parsed service
        # model, which makes every later client ~10x cheaper to create.
        key = tuple(os.environ.get(name) for name in _CREDENTIAL_ENV)
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = boto3.session.Session()
        return session.client("s3", endpoint_url=params.endpoint_url, region_name=region, config=config)


def ensure_bucket(params: FleetParams) -> bool:
    """Create ``params.bucket`` when it does not exist (local S3-compatible stores); True when created."""
    params = with_env_overrides(params)
    client = s3_client(params)
    try:
        client.head_bucket(Bucket=params.bucket)
        return False
    except Exception as exc:  # botocore ClientError 404 / NoSuchBucket
        if not is_missing(exc) and "NoSuchBucket" not in str(exc) and "Not Found" not in str(exc):
            raise
    client.create_bucket(Bucket=params.bucket)
    return True


def is_missing(exc: BaseException) -> bool:
    """Whether a botocore error means "no such key" (404 on GET or HEAD)."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


def describe_s3_error(exc: BaseException, params: FleetParams, key: str) -> str:
    """One line naming the object, the endpoint and what went wrong."""
    where = f"s3://{params.bucket}/{key} at {params.endpoint_url or 'AWS S3'}"
    response = getattr(exc, "response", None)
    if response:
        error = response.get("Error", {})
        return f"{where}: {error.get('Code', '?')}: {error.get('Message', exc)}"
    return f"{where}: {type(exc).__name__}: {exc}"


def compare_versions(a: str, b: str) -> int | None:
    """Order two release versions: ``-1``, ``0``, ``1``, or ``None`` when they cannot be ordered.

    Integers (``"7"``) and dotted integers (``"1.10.2"``) compare numerically, part by part;
    equal strings are equal; anything else (``"rc1"`` against ``"7"``) is not comparable, and
    the agent then refuses to move without an explicit rollback.
    """
    if a == b:
        return 0
    if _NUMERIC.fullmatch(a) and _NUMERIC.fullmatch(b):
        ta, tb = tuple(int(p) for p in a.split(".")), tuple(int(p) for p in b.split("."))
        return (ta > tb) - (ta < tb)
    return None

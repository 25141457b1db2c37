"""Publish an engine bundle to the fleet bucket: the files, then the channel's signed TUF metadata (timestamp last).

The order is what makes a publish safe to interrupt: devices only follow the channel's
``timestamp.json``, and it is written after everything it leads to is in the bucket and
checked. A crash (of this process, the network or the endpoint) at any step leaves the
previous release in force; running the same publish again skips every file already in the
bucket with the same sha256 (kept in the object's metadata) and finishes the rest.

Integrity on the way up: each request carries an ``x-amz-checksum-sha256`` (``ChecksumAlgorithm
SHA256``; per part for multipart uploads), which S3 checks on receipt; after an upload the
object's size and recorded sha256 are read back before the file counts as done. What devices
trust is the TUF metadata (:mod:`motops.fleet.repository`): length and sha256 of every file,
signed with the targets key, bound to the channel, the release name and version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from motops.config import FleetParams, Params
from motops.errors import ConfigError
from motops.fleet.signing import PrivateKeyLike
from motops.fleet.store import (
    SHA256_METADATA,
    FleetError,
    StaleVersionError,
    check_segment,
    compare_versions,
    describe_s3_error,
    is_missing,
    object_key,
    release_key,
    s3_client,
    with_env_overrides,
)
from motops.runtime.bundle import MANIFEST_FILE, manifest_digest, verify_bundle

logger = logging.getLogger(__name__)

_MIB = 1 << 20
#: ``on_progress(event, name)``: ``event`` is ``uploaded`` or ``skipped``; ``name`` a bundle file,
#: ``manifest.json`` or ``metadata`` (the channel's signed TUF metadata, written last).
ProgressCallback = Callable[[str, str], None]


def publish_bundle(
    bundle_dir: str | Path,
    *,
    name: str,
    version: str | None = None,
    params: FleetParams,
    signing_key: PrivateKeyLike | None = None,
    channel: str | None = None,
    allow_older: bool = False,
    client: Any = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Upload a verified bundle as release ``name``/``version`` and sign it into the channel's TUF metadata.

    Args:
        bundle_dir: The engine bundle folder; verified first (sizes, sha256, nothing extra, no
            linked or oversized ``*.sig``), so a damaged bundle touches nothing in the bucket.
        name: Release name, usually the registered model name (one key segment).
        version: Release version (one key segment); ``None``: the manifest's ``model_version``.
            Integers or dotted integers let devices order releases.
        params: The ``fleet`` params; set environment variables override them
            (:data:`motops.fleet.store.ENV_OVERRIDES`).
        signing_key: The targets key (Ed25519 private key: object, PEM file or PEM text);
            ``None``: ``fleet.signing_key`` / ``MOTOPS_SIGNING_KEY``.
        channel: The channel to publish on; ``None``: ``fleet.channel``. A channel with no
            repository yet gets root version 1 (:meth:`~motops.fleet.repository.Repository.init`).
        allow_older: Publish a version older than the channel's (a deliberate fleet-wide
            rollback). Devices still refuse it unless told to roll back.
        client: A boto3 S3 client to use (default: one made from ``params``).
        on_progress: Called after each object is uploaded or skipped (see :data:`ProgressCallback`).

    Returns:
        ``{"name", "version", "channel", "manifest_digest", "published_at", "release_prefix",
        "previous", "uploaded", "skipped", "root_version", "targets_version", "snapshot_version",
        "timestamp_version", "timestamp_expires", "created_root"}``.

    Raises:
        BundleError: The bundle is not intact (nothing was uploaded).
        SigningKeyError: No signing key, it cannot be loaded, or the channel's root does not name it.
        StaleVersionError: The channel's release is newer (or not comparable) and ``allow_older`` is false.
        FleetError: A bad name or version, the release already exists with another manifest, or
            an S3 request failed (the message names the object; the channel was not changed).
    """
    from motops.fleet.repository import Repository, Signers, release_targets

    params = with_env_overrides(params)
    if signing_key is not None:
        params = params.model_copy(update={"signing_key": signing_key})
    name = check_segment(name, "release name")
    if name == "tuf":
        raise FleetError("release name 'tuf': reserved for the channels' metadata; choose another name")
    root = Path(bundle_dir)
    report = verify_bundle(root).raise_if_bad()
    manifest = report.manifest
    version = check_segment(str(manifest["model_version"]) if version is None else version, "release version")
    channel = check_segment(channel or params.channel, "channel")
    client = client if client is not None else s3_client(params)
    repo = Repository(params, channel, client=client)
    digest = manifest_digest(manifest)
    progress = on_progress or (lambda event, item: None)
    uploaded: list[str] = []
    skipped: list[str] = []
    where = f"s3://{params.bucket}/{repo.key('')}"

    def step(what: str, key_: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except FleetError:
            raise
        except Exception as exc:  # botocore/boto3 errors: name the object, say the channel did not move
            if not _is_aws_error(exc):
                raise
            raise FleetError(
                f"publishing {name} {version}: {what} failed: {describe_s3_error(exc, params, key_)}. "
                f"The channel metadata {where} was not changed; run the publish again to finish it "
                "(files already uploaded are skipped)."
            ) from exc

    created_root = not step("reading the channel root", repo.key("1.root.json"), repo.exists)
    signers = Signers.from_params(params, need_root=created_root, need_targets=True)
    if created_root:
        repo.init(signers)
    state = repo.load()
    current = state.release()
    previous = None
    if current is not None:
        previous = current["version"]
        order = compare_versions(version, previous)
        if (order is None or order < 0) and not allow_older:
            why = "older than" if order is not None else "not comparable with"
            raise StaleVersionError(
                f"channel {channel!r} points at {current['name']} {previous}; {version} is {why} it. "
                "Publish a newer version, or pass allow_older (--allow-older) for a deliberate rollback"
            )

    manifest_key = release_key(params, name, version, MANIFEST_FILE)
    existing = step(
        "reading the release manifest", manifest_key, lambda: _get_json(client, params.bucket, manifest_key)
    )
    if existing is not None:
        try:
            existing_digest = manifest_digest(json.loads(existing))
        except (ValueError, TypeError, AttributeError):  # not JSON, or not a manifest object
            existing_digest = None
        if existing_digest != digest:
            raise FleetError(
                f"s3://{params.bucket}/{manifest_key}: release {name} {version} is already published with another "
                f"manifest ({(existing_digest or 'unreadable')[:12]}…, this bundle {digest[:12]}…); releases are "
                "immutable: publish this bundle under a new version"
            )

    transfer = _transfer_config(params)
    files = manifest["files"]
    for rel in sorted(files, key=lambda f: (files[f]["size"], f)):  # small first: more files done early
        entry = files[rel]
        key_ = release_key(params, name, version, rel)
        whole = entry["size"] < transfer.multipart_threshold  # sent with a full-object SHA256 checksum
        done = step(
            f"checking {rel}", key_, lambda k=key_, e=entry, w=whole: _has_object(client, params.bucket, k, e, w)
        )
        if done:
            skipped.append(rel)
            progress("skipped", rel)
            continue
        step(
            f"uploading {rel}",
            key_,
            lambda k=key_, e=entry, f=root / rel: _upload_file(client, params.bucket, k, f, e, transfer),
        )
        step(f"checking the upload of {rel}", key_, lambda k=key_, e=entry, r=rel: _confirm(client, params, k, e, r))
        uploaded.append(rel)
        progress("uploaded", rel)

    manifest_bytes = (root / MANIFEST_FILE).read_bytes()
    entry = {"sha256": hashlib.sha256(manifest_bytes).hexdigest(), "size": len(manifest_bytes)}
    if step("checking manifest.json", manifest_key,
            lambda: _has_object(client, params.bucket, manifest_key, entry, True)):
        skipped.append(MANIFEST_FILE)
        progress("skipped", MANIFEST_FILE)
    else:
        step("uploading manifest.json", manifest_key,
             lambda: put_bytes(client, params.bucket, manifest_key, manifest_bytes, "application/json"))
        uploaded.append(MANIFEST_FILE)
        progress("uploaded", MANIFEST_FILE)

    prefix = object_key(params)
    targets = release_targets(
        files, manifest=manifest_bytes, name=name, version=version, channel=channel,
        path_of=lambda rel: release_key(params, name, version, rel).removeprefix(f"{prefix}/" if prefix else ""),
    )
    signed = repo.write_release(targets, state, signers)
    progress("uploaded", "metadata")
    published_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    logger.info("published %s %s to s3://%s/%s (channel %s, was %s)", name, version, params.bucket,
                release_key(params, name, version), channel, previous)
    return {
        "name": name,
        "version": version,
        "channel": channel,
        "manifest_digest": digest,
        "published_at": published_at,
        "release_prefix": release_key(params, name, version),
        "previous": previous,
        "uploaded": uploaded,
        "skipped": skipped,
        "created_root": created_root,
        **signed,
    }


# --------------------------------------------------------------------------- S3 steps


def _is_aws_error(exc: BaseException) -> bool:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | Boto3Error)


def _transfer_config(params: FleetParams) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=params.multipart_threshold_mb * _MIB,
        multipart_chunksize=params.multipart_chunksize_mb * _MIB,
        max_concurrency=4,
        use_threads=True,
    )


def _get_json(client: Any, bucket: str, key: str) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def _has_object(client: Any, bucket: str, key: str, entry: dict[str, Any], whole: bool) -> bool:
    """Whether ``key`` already holds the file: same size and sha256 in its metadata.

    For a file sent in one request (``whole``) the store's own full-object SHA256 checksum must
    agree too when it reports one, so an object overwritten with other bytes under the old
    metadata is uploaded again. Multipart objects carry a checksum of their parts instead.
    """
    head = _head(client, bucket, key)
    if head is None:
        return False
    same_sha = head.get("Metadata", {}).get(SHA256_METADATA) == entry["sha256"]
    if not (head.get("ContentLength") == entry["size"] and same_sha):
        return False
    stored = head.get("ChecksumSHA256")
    if whole and stored and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT" and "-" not in stored:
        return stored == base64.b64encode(bytes.fromhex(entry["sha256"])).decode()
    return True


def _upload_file(client: Any, bucket: str, key: str, path: Path, entry: dict[str, Any], transfer: Any) -> None:
    metadata = {SHA256_METADATA: entry["sha256"]}
    if entry["size"] >= transfer.multipart_threshold:
        # Multipart: boto3 sends a SHA256 checksum with every part; S3 checks each on receipt.
        client.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"Metadata": metadata, "ChecksumAlgorithm": "SHA256", "ContentType": "application/octet-stream"},
            Config=transfer,
        )
        return
    data = path.read_bytes()
    sha = hashlib.sha256(data).digest()
    if sha.hex() != entry["sha256"] or len(data) != entry["size"]:
        raise FleetError(f"{path}: changed since the bundle was verified (sha256 or size differs from manifest.json)")
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ChecksumSHA256=base64.b64encode(sha).decode(),
        Metadata=metadata,
        ContentType="application/octet-stream",
    )


def put_bytes(
    client: Any, bucket: str, key: str, data: bytes, content_type: str, cache_control: str | None = None
) -> None:
    sha = hashlib.sha256(data)
    extra = {"CacheControl": cache_control} if cache_control else {}
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ChecksumSHA256=base64.b64encode(sha.digest()).decode(),
        Metadata={SHA256_METADATA: sha.hexdigest()},
        ContentType=content_type,
        **extra,
    )


def _confirm(client: Any, params: FleetParams, key: str, entry: dict[str, Any], rel: str) -> None:
    head = _head(client, params.bucket, key)
    if head is None:
        raise FleetError(f"s3://{params.bucket}/{key}: missing right after uploading {rel}")
    size, sha = head.get("ContentLength"), head.get("Metadata", {}).get(SHA256_METADATA)
    if size != entry["size"] or sha != entry["sha256"]:
        raise FleetError(
            f"s3://{params.bucket}/{key}: after upload holds {size} bytes (sha256 {str(sha)[:12]}…); "
            f"expected {entry['size']} bytes, sha256 {entry['sha256'][:12]}…"
        )


def _download_model(
    uri: str, dst: Path, params: Params, name: str, root: Path | None = None
) -> tuple[Path, str | None]:
    """The bundle of an MLflow model URI and its registered version number (``None`` if not found).

    The registry module is imported here: MLflow takes seconds to import. The registered
    version (an integer, so devices can order releases) is the version whose bundle digest
    tag matches the downloaded bundle.
    """
    try:
        from motops.registry.mlflow_registry import download_bundle, find_version_by_digest
    except ImportError as exc:
        raise ConfigError(
            f"--model-uri {uri}: the registry module is not available ({exc}); use --bundle DIR"
        ) from None
    from motops.runtime.bundle import manifest_digest

    got = Path(download_bundle(uri, dst, params, root=root))
    registry = params.registry.model_copy(update={"model_name": name})
    return got, find_version_by_digest(registry, manifest_digest(got))


def _name_from_uri(uri: str) -> str | None:
    """``NAME`` of ``models:/NAME@alias`` or ``models:/NAME/VERSION``; ``None`` for other URIs."""
    if not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/").strip("/")
    return rest.split("@", 1)[0].split("/", 1)[0] or None


def publish_model(
    params: Params,
    *,
    model_uri: str | None = None,
    name: str | None = None,
    version: str | None = None,
    channel: str | None = None,
    signing_key: str | Path | None = None,
    allow_older: bool = False,
    on_progress: Any = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Publish a registered engine (default ``models:/NAME@champion``): download, verify, then :func:`publish_bundle`.

    The release version is the registered version number whose bundle digest matches (so
    devices order releases by it); ``version`` overrides it.
    """
    import tempfile

    uri = model_uri or f"models:/{params.registry.model_name}@champion"
    name = name or _name_from_uri(uri) or params.registry.model_name
    with tempfile.TemporaryDirectory(prefix="motops-publish-") as tmp:
        bundle, registered = _download_model(uri, Path(tmp) / "bundle", params, name, root)
        return publish_bundle(
            bundle, name=name, version=version or registered, params=params.fleet, signing_key=signing_key,
            channel=channel, allow_older=allow_older, on_progress=on_progress,
        )

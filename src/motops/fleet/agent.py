"""The edge agent: follow a channel's TUF metadata, verify the release, switch engines atomically, roll back.

Install folder (``fleet.install_dir``)::

    INSTALL/
      current -> versions/7        symlink the runtime loads (``motops track --engine INSTALL/current``)
      versions/6/ versions/7/      verified bundles, the last ``keep_versions`` kept
      staging/8/                   a download in progress (resumed file by file, byte range within a file)
      metadata/CHANNEL/            the trusted TUF metadata (root.json + root_history/, timestamp, snapshot,
                                   targets): never reset; a corrupt file stops the agent with its name
      plan-cache/                  TensorRT plans built here, per detector ONNX sha256, + timing cache
      state.json                   installed, previous, channel_version, last_check, last_error, ...
      .lock                        one sync at a time per folder (flock, waited for at most lock_timeout_s)

One sync (python-tuf's ``Updater`` over :class:`~motops.fleet.fetcher.S3Fetcher`): follow the chain
of signed roots from the trusted one, then timestamp -> snapshot -> targets, each checked for
signatures (threshold of the root's keys), version (no rollback), expiry (a frozen channel is
refused) and length (every GET asks for at most the allowed bytes), and for the channel it was
signed for. The targets name one release (custom ``name``, ``version``, ``channel``): a version
older than the installed one is refused unless rolling back. The release's files go into
``staging/VERSION`` -- after checking their declared sizes fit on the disk -- each GET ending
at its signed length; each file is checked for length and sha256, ``manifest.json`` must list
exactly the signed files, the bundle verifies and its models load; where CUDA and TensorRT
exist and the bundle has no plan for this GPU, one is built (cached). Then the folder moves to
``versions/VERSION`` and ``current`` is replaced with ``os.replace`` -- a rename, so a reader sees
the old engine or the new one, never a mix. The whole sync has a deadline
(``fleet.sync_deadline_s``). A failure at any step leaves ``current`` as it was and records a
one-line error in ``state.json`` (or, where that cannot be written, in the error itself).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

from motops.config import FleetParams
from motops.errors import MotopsError
from motops.fleet.signing import PublicKeyLike, SigningKeyError, load_public_key, public_key_fingerprint
from motops.fleet.store import (
    CHANNEL_FIELD,
    ISSUED_FIELD,
    FleetError,
    StaleVersionError,
    VerificationError,
    check_segment,
    compare_versions,
    metadata_key,
    object_key,
    s3_client,
    with_env_overrides,
)
from motops.fsutil import atomic_write, fsync_dir
from motops.runtime.bundle import MANIFEST_FILE, manifest_digest, sha256_file, verify_bundle

logger = logging.getLogger(__name__)

STATE_FILE: Final = "state.json"
CURRENT: Final = "current"
VERSIONS_DIR: Final = "versions"
STAGING_DIR: Final = "staging"
PLAN_CACHE_DIR: Final = "plan-cache"
METADATA_DIR: Final = "metadata"
#: Most bytes a root.json may have (python-tuf's default), also for the one read to migrate a device.
ROOT_MAX_BYTES: Final = 512_000
_TOP_ROLES: Final = ("root", "timestamp", "snapshot", "targets")
_STATE_DEFAULTS: Final = {
    "installed": None,
    "previous": None,
    "name": None,
    "manifest_digest": None,
    "installed_at": None,
    "channel": None,
    "channel_version": None,
    "channel_name": None,
    "manifest_sha256": None,
    "last_check": None,
    "last_error": None,
    "last_error_at": None,
    "held_back": None,
    "history": [],
    "versions": {},
    "tensorrt": None,
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class EdgeAgent:
    """Keeps ``install_dir/current`` on the verified release a channel's TUF metadata names.

    Args:
        install_dir: The agent's folder (created); ``None``: ``fleet.install_dir``.
        params: The ``fleet`` params (environment variables override them, see
            :data:`motops.fleet.store.ENV_OVERRIDES`); ``None``: the defaults.
        public_key: The Ed25519 public key that signed the channel's root version 1 (object,
            PEM file or PEM text); ``None``: ``fleet.public_key`` / ``MOTOPS_PUBLIC_KEY``. Used
            once, when the device has no trusted root yet and ``fleet.trusted_root`` is unset.
        client: A boto3 S3 client (default: one made from ``params`` on first use).
        load_check: Load each downloaded engine with ONNX Runtime before switching to it, so a
            release whose models do not load never becomes ``current``.

    Raises:
        SigningKeyError: The public key cannot be loaded. Without a trusted root or a key the
            agent can report :meth:`status` and :meth:`rollback`, and :meth:`sync` refuses to run.
    """

    def __init__(
        self,
        install_dir: str | Path | None = None,
        params: FleetParams | None = None,
        public_key: PublicKeyLike | None = None,
        *,
        client: Any = None,
        load_check: bool = True,
    ) -> None:
        self.params = with_env_overrides(params or FleetParams())
        self.install_dir = Path(install_dir if install_dir is not None else self.params.install_dir)
        source = public_key if public_key is not None else self.params.public_key
        self.public_key = load_public_key(source) if source is not None else None
        self.channel = check_segment(self.params.channel, "channel")
        self.load_check = load_check
        self._client = client
        self.last_reader: Any = None  # the S3Reader of the last sync (bytes received, for tests and logs)

    # ------------------------------------------------------------------ paths

    @property
    def current(self) -> Path:
        """The ``current`` symlink (what the runtime loads)."""
        return self.install_dir / CURRENT

    @property
    def state_path(self) -> Path:
        """``install_dir/state.json``."""
        return self.install_dir / STATE_FILE

    def version_dir(self, version: str) -> Path:
        """``install_dir/versions/VERSION``."""
        return self.install_dir / VERSIONS_DIR / check_segment(version, "version")

    @property
    def metadata_dir(self) -> Path:
        """``install_dir/metadata/CHANNEL``: the trusted TUF metadata."""
        return self.install_dir / METADATA_DIR / self.channel

    @property
    def client(self) -> Any:
        """The S3 client (made on first use)."""
        if self._client is None:
            self._client = s3_client(self.params)
        return self._client

    # ------------------------------------------------------------------ public API

    def status(self) -> dict[str, Any]:
        """What is installed, what the channel said at the last check, and how fresh its metadata is (no network).

        Returns:
            ``state.json``'s content (``installed``, ``previous``, ``channel_version``,
            ``last_check``, ``last_error``, ...) plus ``install_dir``, ``current`` (the folder the
            symlink resolves to, or ``None``), ``channel``, ``bucket``, ``root_version`` (the
            trusted root), ``timestamp_version``, ``timestamp_issued``, ``timestamp_age_s``,
            ``timestamp_expires``, ``timestamp_expires_in_s`` and ``public_key_fingerprint``. A
            corrupt ``state.json`` shows as ``last_error``.
        """
        try:
            state = self._read_state()
        except FleetError as exc:
            state = {**json.loads(json.dumps(_STATE_DEFAULTS)), "last_error": str(exc)}
        target = None
        if self.current.is_symlink() or self.current.exists():
            with contextlib.suppress(OSError):
                target = str(self.current.resolve(strict=True))
        state["kept_versions"] = sorted(state.pop("versions", {}))
        return {
            **state,
            "install_dir": str(self.install_dir),
            "current": target,
            "channel": self.channel,
            "bucket": self.params.bucket,
            "endpoint_url": self.params.endpoint_url,
            **self._trusted_summary(),
            "public_key_fingerprint": public_key_fingerprint(self.public_key) if self.public_key else None,
        }

    def sync(self, allow_rollback: bool = False) -> dict[str, Any]:
        """Check the channel once and install the release its metadata names when it is newer and verifies.

        Args:
            allow_rollback: Accept a version older than (or not comparable with) the installed
                one, and re-install a version this device rolled back from.

        Returns:
            ``{"action", "version", "previous", "channel_version"}`` where ``action`` is
            ``installed``, ``up-to-date`` or ``held`` (the channel still points at the version
            :meth:`rollback` left; a newer release or ``allow_rollback`` moves on).

        Raises:
            VerificationError: Metadata failed (signature, threshold, expiry, version, length,
                channel), or a file's size or sha256, the manifest, or loading the models;
                ``current`` is untouched.
            StaleVersionError: The channel names an older (or not comparable) version.
            SyncDeadlineError: ``fleet.sync_deadline_s`` passed; the lock is released.
            FleetError: Nothing published on the channel, S3 could not be read, the lock was
                held longer than ``fleet.lock_timeout_s``, the release does not fit on the disk,
                a write failed (disk full, read-only: the message names the path), or
                ``state.json`` or the trusted metadata is corrupt (refused, never reset).
        """
        from motops.fleet.fetcher import Deadline

        deadline = Deadline(self.params.sync_deadline_s)
        try:
            self.install_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FleetError(_describe_os_error(exc, "creating the install folder")) from None
        with self._locked():
            state = self._read_state()
            state["last_check"] = _now()
            state["channel"] = self.channel
            try:
                result = self._sync(state, allow_rollback, deadline)
            except (MotopsError, OSError) as exc:
                error = exc if isinstance(exc, MotopsError) else FleetError(_describe_os_error(exc, "syncing"))
                if isinstance(exc, OSError):
                    self._drop_staging()  # a write failed: keep no half-written files
                state["last_error"] = str(error)
                state["last_error_at"] = state["last_check"]
                try:
                    self._write_state(state)
                except OSError as write_exc:
                    error = FleetError(f"{error} (and {_describe_os_error(write_exc, 'recording it')})")
                logger.info("sync of channel %s failed: %s", self.channel, error)  # the caller reports it
                if error is exc:
                    raise
                raise error from None
            state["last_error"] = None
            try:
                self._write_state(state)
            except OSError as exc:
                raise FleetError(_describe_os_error(exc, "recording the sync")) from None
            return result

    def rollback(self) -> dict[str, Any]:
        """Switch ``current`` back to the previous installed version (re-verified first).

        The version rolled back from is *held*: later syncs leave it alone until the channel
        points at another version (or ``sync(allow_rollback=True)``).

        Returns:
            ``{"action": "rolled-back", "version", "previous"}``.

        Raises:
            FleetError: No previous version, or its folder is gone (pruned).
            VerificationError: The previous version's files no longer match its manifest.
        """
        self.install_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._read_state()
            installed, previous = state["installed"], state["previous"]
            try:
                if not previous:
                    raise FleetError(f"{self.install_dir}: nothing to roll back to (no previous version installed)")
                folder = self.version_dir(previous)
                if not folder.is_dir():
                    raise FleetError(
                        f"{folder}: previous version {previous} is no longer kept (keep_versions="
                        f"{self.params.keep_versions}); sync it with allow_rollback instead"
                    )
                self._verify_installed(folder, previous, state)
                self._switch(previous)
            except (MotopsError, OSError) as exc:
                error = exc if isinstance(exc, MotopsError) else FleetError(_describe_os_error(exc, "rolling back"))
                state["last_error"] = f"rollback: {error}"
                state["last_error_at"] = _now()
                with contextlib.suppress(OSError):  # a read-only folder: the error itself says it
                    self._write_state(state)
                if error is exc:
                    raise
                raise error from None
            info = state["versions"].get(previous, {})
            state.update(
                installed=previous,
                previous=installed,
                held_back=installed,
                name=info.get("name", state["name"]),
                manifest_digest=info.get("manifest_digest"),
                installed_at=_now(),
                last_error=None,
            )
            state["history"] = [v for v in state["history"] if v != previous] + [previous]
            self._write_state(state)
            logger.info("rolled back %s -> %s", installed, previous)
            return {"action": "rolled-back", "version": previous, "previous": installed}

    def run_forever(
        self,
        poll_interval: float | None = None,
        *,
        stop: threading.Event | None = None,
        max_iterations: int | None = None,
    ) -> None:
        """Sync every ``poll_interval`` seconds until ``stop`` is set; failures are logged and retried.

        Args:
            poll_interval: Seconds between checks; ``None``: ``fleet.poll_interval_s``. Each wait
                is jittered by up to +-10% so a fleet started together does not poll in step.
            stop: Set it (e.g. from a SIGTERM handler) to end the loop after the current sync.
            max_iterations: Stop after this many syncs (tests); ``None``: run until stopped.
        """
        interval = self.params.poll_interval_s if poll_interval is None else float(poll_interval)
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set():
            try:
                result = self.sync()
                if result["action"] == "installed":
                    logger.info("installed %s (was %s)", result["version"], result["previous"])
            except MotopsError as exc:  # recorded in state.json by sync(); keep serving the current engine
                logger.warning("sync failed, keeping the current engine: %s", exc)
            except Exception:  # an unexpected bug must not kill the service loop
                logger.exception("unexpected error during sync; keeping the current engine")
            done += 1
            if max_iterations is not None and done >= max_iterations:
                break
            stop.wait(interval * random.uniform(0.9, 1.1))

    # ------------------------------------------------------------------ sync steps

    def _sync(self, state: dict[str, Any], allow_rollback: bool, deadline: Any) -> dict[str, Any]:
        from motops.fleet.fetcher import S3Reader

        reader = self.last_reader = S3Reader(self.client, self.params, deadline)
        self._refresh(reader)
        release = self._release()
        name, version = release["name"], release["version"]
        manifest_sha = release["files"][MANIFEST_FILE].hashes["sha256"]
        state.update(channel_version=version, channel_name=name)
        installed = state["installed"]
        base = {"version": version, "previous": state["previous"], "channel_version": version}
        same_release = installed == version and state["name"] in (None, name) and self._current_is(version)
        if same_release and state["manifest_sha256"] == manifest_sha:
            return {**base, "action": "up-to-date"}
        if state["held_back"] == version and not allow_rollback:
            logger.info("channel points at %s, which this device rolled back from; holding %s", version, installed)
            return {**base, "version": installed, "action": "held"}
        if installed is not None and installed != version:
            order = compare_versions(version, installed)
            if (order is None or order < 0) and not allow_rollback:
                why = "older than" if order is not None else "not comparable with"
                raise StaleVersionError(
                    f"channel {self.channel!r} names {name} {version}, {why} the installed {installed}; refused. "
                    "Roll back deliberately with allow_rollback / --allow-rollback"
                )
        staging = self.install_dir / STAGING_DIR / version
        manifest = self._fetch_manifest(release, staging, reader)
        digest = manifest_digest(manifest)
        if same_release and state["manifest_digest"] == digest:
            # Installed by the pre-TUF agent (no manifest_sha256 recorded): the same release.
            state["manifest_sha256"] = manifest_sha
            state["versions"].setdefault(version, {})["manifest_sha256"] = manifest_sha
            shutil.rmtree(staging, ignore_errors=True)
            return {**base, "action": "up-to-date"}
        self._install(release, manifest, digest, state, reader)
        return {**base, "previous": state["previous"], "action": "installed"}

    # ------------------------------------------------------------------ TUF metadata

    def _metadata_url(self) -> str:
        return f"s3://{self.params.bucket}/{metadata_key(self.params, self.channel)}"

    def _refresh(self, reader: Any) -> None:
        """Bring the trusted metadata up to date with python-tuf (root chain, timestamp, snapshot, targets)."""
        from tuf.api import exceptions as tuf_exc
        from tuf.ngclient import Updater, UpdaterConfig

        from motops.fleet.fetcher import S3Fetcher

        self._check_trusted_metadata()
        fetcher = S3Fetcher(reader, self.channel)
        bootstrap = None if (self.metadata_dir / "root.json").exists() else self._bootstrap_root(fetcher)
        where = f"channel {self.channel!r} ({self._metadata_url()})"
        try:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            updater = Updater(
                str(self.metadata_dir),
                self._metadata_url(),
                fetcher=fetcher,
                config=UpdaterConfig(root_max_length=ROOT_MAX_BYTES),
                bootstrap=bootstrap,
            )
            updater.refresh()
        except tuf_exc.DownloadHTTPError as exc:
            if exc.status_code == 404:
                raise FleetError(f"{where}: no release published ({exc})") from None
            raise FleetError(f"{where}: {exc}") from None
        except tuf_exc.ExpiredMetadataError as exc:
            raise VerificationError(
                f"{where}: {exc}: the channel's signed metadata is out of date (a frozen mirror, or the resign "
                "deployment stopped); nothing installed"
            ) from None
        except tuf_exc.RepositoryError as exc:
            raise VerificationError(f"{where}: {type(exc).__name__}: {exc}; nothing installed") from None
        except tuf_exc.DownloadError as exc:
            cause = exc.__cause__
            if isinstance(cause, MotopsError):
                raise cause from None
            raise FleetError(f"{where}: {type(exc).__name__}: {exc}" + (f" ({cause})" if cause else "")) from None

    def _check_trusted_metadata(self) -> None:
        """Refuse to run on trusted metadata that does not parse: never reset it (that undoes rollback protection)."""
        from tuf.api.metadata import Metadata

        folder = self.metadata_dir
        if not folder.is_dir():
            return
        paths = [folder / f"{role}.json" for role in _TOP_ROLES]
        paths += sorted((folder / "root_history").glob("*.root.json"))
        if (folder / "root_history").is_dir() and not (folder / "root.json").exists():
            paths.append(folder / "root.json")  # history without root.json: the trusted root was lost
        for path in paths:
            if not path.exists() and not path.is_symlink():
                continue
            role = path.name.split(".")[-2]
            try:
                md = Metadata.from_bytes(path.read_bytes())
                if md.signed.type != role:
                    raise ValueError(f"a {md.signed.type} metadata where {role} was expected")
            except Exception as exc:
                raise VerificationError(
                    f"{path}: trusted metadata is corrupt ({type(exc).__name__}: {str(exc)[:200]}); refusing to sync. "
                    "It is never reset automatically: restore it, or re-provision the device's trusted root "
                    "(fleet.trusted_root) after removing the folder"
                ) from None

    def _bootstrap_root(self, fetcher: Any) -> bytes:
        """The first trusted root: ``fleet.trusted_root``, or the channel's ``1.root.json`` if the public key signed it.

        Raises:
            SigningKeyError: Neither is configured.
            VerificationError: ``1.root.json`` is not a root version 1 signed by the public key.
        """
        from securesystemslib.signer import SSlibKey
        from tuf.api.metadata import Metadata

        if self.params.trusted_root:
            path = Path(self.params.trusted_root)
            try:
                if path.stat().st_size > ROOT_MAX_BYTES:
                    raise FleetError(f"fleet.trusted_root {path}: larger than {ROOT_MAX_BYTES} bytes; not a root.json")
                return path.read_bytes()
            except OSError as exc:
                raise FleetError(f"fleet.trusted_root: {_describe_os_error(exc, 'reading it')}") from None
        if self.public_key is None:
            raise SigningKeyError(
                "the edge agent needs a trusted root to install anything: set fleet.trusted_root (a root.json, "
                "MOTOPS_TRUSTED_ROOT) or fleet.public_key (the key that signed root version 1, MOTOPS_PUBLIC_KEY)"
            )
        url = f"{self._metadata_url()}1.root.json"
        from tuf.api import exceptions as tuf_exc

        try:
            data = fetcher.download_bytes(url, ROOT_MAX_BYTES)
        except tuf_exc.DownloadHTTPError as exc:
            if exc.status_code == 404:
                raise FleetError(f"{url}: no release published on channel {self.channel!r} (no root)") from None
            raise FleetError(f"{url}: {exc}") from None
        except tuf_exc.DownloadError as exc:
            raise FleetError(f"{url}: {exc}") from None
        except tuf_exc.RepositoryError as exc:
            raise VerificationError(str(exc)) from None
        key = SSlibKey.from_crypto(self.public_key)
        try:
            md = Metadata.from_bytes(data)
            if md.signed.type != "root" or md.signed.version != 1:
                raise ValueError(f"{md.signed.type} version {md.signed.version}, not root version 1")
            if key.keyid not in md.signed.roles["root"].keyids or key.keyid not in md.signatures:
                raise ValueError("not signed by the trusted public key (fleet.public_key)")
            key.verify_signature(md.signatures[key.keyid], md.signed_bytes)
        except Exception as exc:
            raise VerificationError(f"{url}: refused as the first trusted root: {exc}") from None
        logger.info("trusting root version 1 of channel %s (signed by the configured public key)", self.channel)
        return data

    def _release(self) -> dict[str, Any]:
        """The one release the trusted targets name: ``{name, version, files: {rel: TargetFile}}``."""
        from tuf.api.metadata import Metadata

        path = self.metadata_dir / "targets.json"
        targets = Metadata.from_bytes(path.read_bytes()).signed
        prefix = object_key(self.params)
        releases = set()
        files: dict[str, Any] = {}
        for target_path, info in targets.targets.items():
            custom = info.custom if isinstance(info.custom, dict) else {}
            if custom.get("channel") != self.channel or targets.unrecognized_fields.get(CHANNEL_FIELD) != self.channel:
                raise VerificationError(
                    f"{path}: target {target_path} is signed for channel {custom.get('channel')!r}, "
                    f"not {self.channel!r}"
                )
            name, version = str(custom.get("name")), str(custom.get("version"))
            releases.add((name, version))
            rel = target_path.removeprefix(f"{name}/{version}/")
            if rel == target_path or not _safe_relpath(rel):
                raise VerificationError(f"{path}: target {target_path!r} is not a file of release {name}/{version}")
            files[rel] = info
            info.key = "/".join(p for p in (prefix, target_path) if p)
        if not files:
            raise FleetError(f"channel {self.channel!r}: the signed targets list no release yet")
        if len(releases) != 1:
            raise VerificationError(f"{path}: the signed targets name {len(releases)} releases; expected one")
        ((name, version),) = releases
        try:
            check_segment(name, "release name")
            check_segment(version, "release version")
        except FleetError as exc:
            raise VerificationError(f"{path}: {exc}") from None
        if MANIFEST_FILE not in files:
            raise VerificationError(f"{path}: release {name} {version} lists no {MANIFEST_FILE}")
        return {"name": name, "version": version, "files": files}

    def _trusted_summary(self) -> dict[str, Any]:
        """Versions and timestamp freshness from the trusted metadata on disk (``None`` where absent)."""
        from tuf.api.metadata import Metadata

        out: dict[str, Any] = dict.fromkeys(
            ("root_version", "timestamp_version", "timestamp_issued", "timestamp_age_s", "timestamp_expires",
             "timestamp_expires_in_s"))
        now = datetime.now(UTC)
        for role in ("root", "timestamp"):
            try:
                signed = Metadata.from_bytes((self.metadata_dir / f"{role}.json").read_bytes()).signed
            except Exception:  # absent, or corrupt: sync says which
                continue
            out[f"{role}_version"] = signed.version
            if role == "timestamp":
                out["timestamp_expires"] = signed.expires.isoformat().replace("+00:00", "Z")
                out["timestamp_expires_in_s"] = round((signed.expires - now).total_seconds())
                issued = signed.unrecognized_fields.get(ISSUED_FIELD)
                out["timestamp_issued"] = issued
                with contextlib.suppress(TypeError, ValueError):
                    out["timestamp_age_s"] = round((now - datetime.fromisoformat(issued)).total_seconds())
        return out

    # ------------------------------------------------------------------ download, install

    def _fetch_manifest(self, release: dict[str, Any], staging: Path, reader: Any) -> dict[str, Any]:
        """Download ``manifest.json`` (signed length and sha256) into staging and check it lists exactly the targets."""
        name, version = release["name"], release["version"]
        staging.mkdir(parents=True, exist_ok=True)
        info = release["files"][MANIFEST_FILE]
        self._check_free_space(staging, release["files"])
        path = staging / MANIFEST_FILE
        if not self._have(path, info) and not self._get_target(reader, info, path):
            raise VerificationError(
                f"release {name} {version}: {MANIFEST_FILE} in the bucket does not match its signed sha256; refused",
                version=version, files=[MANIFEST_FILE],
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            files = manifest["files"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise VerificationError(f"{path}: not a JSON manifest ({exc})", version=version) from None
        signed = {r: (i.length, i.hashes.get("sha256")) for r, i in release["files"].items() if r != MANIFEST_FILE}
        listed = {r: (e.get("size"), e.get("sha256")) for r, e in files.items()} if isinstance(files, dict) else {}
        if listed != signed:
            differ = sorted(set(listed.items()) ^ set(signed.items()))
            raise VerificationError(
                f"release {name} {version}: manifest.json and the signed targets disagree on "
                f"{sorted({rel for rel, _ in differ})}; refused",
                version=version, files=[MANIFEST_FILE],
            )
        return manifest

    def _check_free_space(self, staging: Path, files: dict[str, Any]) -> None:
        """Refuse before writing when the declared sizes of what is still missing do not fit."""
        needed = sum(i.length for rel, i in files.items() if not self._have(staging / rel, i, hash_it=False))
        free = shutil.disk_usage(staging).free
        reserve = int(self.params.min_free_mb * (1 << 20))
        if needed + reserve > free:
            raise FleetError(
                f"{staging}: the release needs {needed / 1e6:.1f} MB and {free / 1e6:.1f} MB are free (keeping "
                f"fleet.min_free_mb={self.params.min_free_mb:g}); refused before writing. Free space or lower "
                "fleet.keep_versions"
            )

    @staticmethod
    def _have(path: Path, info: Any, *, hash_it: bool = True) -> bool:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != info.length:
            return False
        return not hash_it or sha256_file(path) == info.hashes.get("sha256")

    def _get_target(self, reader: Any, info: Any, dest: Path) -> bool:
        from motops.fleet.fetcher import download_target

        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        if not download_target(reader, info.key, part, info.length, info.hashes.get("sha256", "")):
            logger.warning("%s: size or sha256 differs from the signed targets; discarded", info.key)
            return False
        os.replace(part, dest)
        return True

    def _install(
        self, release: dict[str, Any], manifest: dict[str, Any], digest: str, state: dict[str, Any], reader: Any
    ) -> None:
        name, version = release["name"], release["version"]
        target = self.version_dir(version)
        if target.is_dir() and self._kept_copy_ok(target, version, digest, state):
            logger.info("re-using the kept copy of %s in %s", version, target)
            tensorrt = state["versions"].get(version, {}).get("tensorrt")
            shutil.rmtree(self.install_dir / STAGING_DIR / version, ignore_errors=True)
        else:
            staging = self._download(release, reader)
            tensorrt = self._maybe_build_plan(staging, digest)
            if target.exists():  # a damaged leftover, or another release under this version number
                trash = target.with_name(f".{version}.trash-{uuid.uuid4().hex[:8]}")
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
            fsync_dir(target.parent)
        self._switch(version)
        manifest_sha = release["files"][MANIFEST_FILE].hashes["sha256"]
        previous = state["installed"] if state["installed"] != version else state["previous"]
        state["versions"][version] = {"name": name, "manifest_digest": digest, "manifest_sha256": manifest_sha,
                                      "installed_at": _now(), "tensorrt": tensorrt}
        state.update(
            installed=version,
            previous=previous,
            name=name,
            manifest_digest=digest,
            manifest_sha256=manifest_sha,
            installed_at=_now(),
            held_back=None,
            tensorrt=tensorrt,
        )
        state["history"] = [v for v in state["history"] if v != version] + [version]
        self._prune(state)
        logger.info("switched %s to %s %s", self.current, name, version)

    def _download(self, release: dict[str, Any], reader: Any) -> Path:
        """Fetch the release's files into ``staging/VERSION`` (manifest.json is there already) and verify them."""
        name, version = release["name"], release["version"]
        staging = self.install_dir / STAGING_DIR / version
        bad: list[str] = []
        for rel, info in sorted(release["files"].items(), key=lambda item: item[1].length):
            if rel == MANIFEST_FILE or self._have(staging / rel, info):
                continue  # finished by an earlier, interrupted sync
            if not self._get_target(reader, info, staging / rel):
                bad.append(rel)
        for leftover in sorted(staging.rglob("*"), reverse=True):  # deepest first, so emptied folders go too
            rel = leftover.relative_to(staging).as_posix()
            if leftover.is_dir() and not leftover.is_symlink():
                with contextlib.suppress(OSError):
                    leftover.rmdir()
            elif rel not in release["files"]:  # every fetch has finished: a .part left here is stale too
                leftover.unlink()
        if bad:
            raise VerificationError(
                f"release {name} {version}: {', '.join(bad)} in the bucket do(es) not match the signed targets "
                "(size or sha256); refused, the current engine keeps running",
                version=version,
                files=bad,
            )
        report = verify_bundle(staging)
        if not report.ok:
            details = "; ".join(f"{p.file}: {p.message}" for p in report.problems)
            raise VerificationError(
                f"release {name} {version} failed verification: {details}", version=version, files=report.bad_files
            )
        if self.load_check:
            self._check_loads(staging, version)
        return staging

    def _drop_staging(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self.install_dir / STAGING_DIR)

    def _check_loads(self, folder: Path, version: str) -> None:
        from motops.runtime.bundle import load_bundle

        try:
            load_bundle(folder, backend="onnxruntime", verify=False, device="cpu")
        except (MotopsError, ValueError, OSError, RuntimeError) as exc:
            raise VerificationError(f"release {version}: its models do not load here: {exc}", version=version) from exc

    def _kept_copy_ok(self, folder: Path, version: str, digest: str, state: dict[str, Any]) -> bool:
        try:
            self._verify_installed(folder, version, state, digest)
        except MotopsError as exc:
            logger.warning("kept copy %s is not usable (%s); downloading again", folder, exc)
            return False
        return True

    def _verify_installed(self, folder: Path, version: str, state: dict[str, Any], digest: str | None = None) -> None:
        """Check a kept version against its manifest and the digest it was installed (signed) with."""
        report = verify_bundle(folder)
        if not report.ok:
            details = "; ".join(f"{p.file}: {p.message}" for p in report.problems)
            raise VerificationError(f"{folder}: {details}", version=version, files=report.bad_files)
        signed = digest or state["versions"].get(version, {}).get("manifest_digest")
        local_plans = report.manifest.get("extra", {}).get("edge_agent", {})
        found = local_plans.get("signed_manifest_digest") or manifest_digest(report.manifest)
        if signed is not None and found != signed:
            raise VerificationError(
                f"{folder}: manifest digest {found[:12]}… is not the signed {signed[:12]}…", version=version
            )

    def _maybe_build_plan(self, staging: Path, digest: str) -> dict[str, Any]:
        """Build and cache a detector TensorRT plan for this GPU when the bundle has none (CUDA + TensorRT only).

        The plan is added to the staged bundle and its manifest (``role plan_detector_fp16``);
        ``extra.edge_agent.signed_manifest_digest`` keeps the digest the release was signed
        with. A failed build is logged and the engine runs its ONNX.
        """
        if not self.params.build_tensorrt:
            return {"built": False, "reason": "disabled (fleet.build_tensorrt is false)"}
        from motops.runtime import tensorrt as trt

        ok, reason = _tensorrt_available()
        if not ok:
            return {"built": False, "reason": reason}
        for precision in trt.PRECISIONS:
            found = trt.find_plan(staging, "detector", precision)
            if found is not None:
                return {"built": False, "reason": f"the bundle has a plan for this GPU: {found.name}"}
        manifest_path = staging / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        roles = {e["role"]: rel for rel, e in manifest["files"].items()}
        if "detector" not in roles:
            return {"built": False, "reason": "no detector ONNX in the bundle"}
        onnx_sha = manifest["files"][roles["detector"]]["sha256"]
        cache = self.install_dir / PLAN_CACHE_DIR / onnx_sha[:16]
        try:
            plan = trt.find_plan(cache, "detector", "fp16")
            cached = plan is not None
            if plan is None:
                plan = trt.build_plan(
                    staging / roles["detector"],
                    cache / "plans",
                    name="detector",
                    precision="fp16",
                    timing_cache=self.install_dir / PLAN_CACHE_DIR / "timing.cache",
                )
        except MotopsError as exc:
            logger.warning("TensorRT plan not built, the ONNX will run: %s", exc)
            return {"built": False, "reason": f"TensorRT build failed: {exc}"}
        rel = f"plans/{plan.name}"
        (staging / "plans").mkdir(exist_ok=True)
        shutil.copyfile(plan, staging / rel)
        manifest["files"][rel] = {"role": "plan_detector_fp16", "sha256": sha256_file(staging / rel),
                                  "size": (staging / rel).stat().st_size}
        manifest["files"] = dict(sorted(manifest["files"].items()))
        manifest.setdefault("backends", {})["tensorrt"] = {
            "built": True, "reason": "built on this device by the edge agent", "plans": [plan.name]
        }
        manifest.setdefault("extra", {})["edge_agent"] = {"signed_manifest_digest": digest, "local_plans": [rel]}
        atomic_write(manifest_path, json.dumps(manifest, indent=2).encode() + b"\n")
        report = verify_bundle(staging)
        if not report.ok:
            raise VerificationError(f"{staging}: after adding the TensorRT plan: {report.problems[0].message}")
        return {"built": True, "reason": reason, "plan": rel, "cached": cached}

    # ------------------------------------------------------------------ switching, state

    def _current_is(self, version: str) -> bool:
        try:
            return self.current.resolve(strict=True) == self.version_dir(version).resolve(strict=True)
        except OSError:
            return False

    def _switch(self, version: str) -> None:
        """Point ``current`` at ``versions/VERSION`` with one rename (atomic on POSIX)."""
        tmp = self.install_dir / f".{CURRENT}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.join(VERSIONS_DIR, version), tmp, target_is_directory=True)
        try:
            os.replace(tmp, self.current)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.install_dir)

    def _prune(self, state: dict[str, Any]) -> None:
        keep = set(state["history"][-self.params.keep_versions :])
        keep.update(v for v in (state["installed"], state["previous"]) if v)
        folder = self.install_dir / VERSIONS_DIR
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.name not in keep and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
                state["versions"].pop(entry.name, None)
        state["history"] = [v for v in state["history"] if v in keep]
        self._prune_plan_cache(keep)
        staging = self.install_dir / STAGING_DIR
        for entry in staging.iterdir() if staging.is_dir() else ():
            # just installed: a partial download of any other version is superseded
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _prune_plan_cache(self, keep: set[str]) -> None:
        """Drop cached TensorRT plans of detectors no kept version uses (the timing cache stays)."""
        cache = self.install_dir / PLAN_CACHE_DIR
        if not cache.is_dir():
            return
        used = set()
        for version in keep:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
                files = json.loads((self.install_dir / VERSIONS_DIR / version / MANIFEST_FILE).read_text())["files"]
                used.update(e["sha256"][:16] for e in files.values() if e.get("role") == "detector")
        for entry in cache.iterdir():
            if entry.is_dir() and entry.name not in used:
                shutil.rmtree(entry, ignore_errors=True)

    def _read_state(self) -> dict[str, Any]:
        """``state.json`` merged over the defaults; absent: the defaults.

        Raises:
            FleetError: It exists but cannot be read or is not a JSON object. It is never
                treated as empty: that would switch rollback protection off.
        """
        state = json.loads(json.dumps(_STATE_DEFAULTS))
        try:
            loaded = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError(f"a JSON {type(loaded).__name__}, expected an object")
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            raise FleetError(
                f"{self.state_path}: corrupt or unreadable ({exc}); refusing to run, since rollback protection "
                "depends on it. Restore it, or remove it to let the agent re-install the channel's release"
            ) from None
        state.update({k: v for k, v in loaded.items() if k in _STATE_DEFAULTS})
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_path, json.dumps(state, indent=2, sort_keys=False).encode() + b"\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One sync or rollback at a time in this install folder; others wait up to ``fleet.lock_timeout_s``.

        Raises:
            FleetError: The lock stayed taken past the timeout, or the lock file cannot be opened.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        path = self.install_dir / ".lock"
        try:
            fh = open(path, "a+")  # noqa: SIM115 - closed below, after the unlock
        except OSError as exc:
            raise FleetError(_describe_os_error(exc, "opening the lock file")) from None
        with fh:
            give_up = time.monotonic() + self.params.lock_timeout_s
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        raise FleetError(
                            f"{path}: another sync or rollback of this folder still holds the lock after "
                            f"{self.params.lock_timeout_s:g} s (fleet.lock_timeout_s); not run, try again later"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- helpers


def _describe_os_error(exc: OSError, doing: str) -> str:
    """One line: the path, the cause (with its errno name) and what was being done."""
    name = errno.errorcode.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else "install folder"
    hint = {"ENOSPC": "; free space on the device", "EDQUOT": "; free space on the device",
            "EROFS": "; the folder must be writable", "EACCES": "; the folder must be writable"}.get(name, "")
    return (f"{where}: {exc.strerror or exc} [{name or type(exc).__name__}] while {doing}; partial files removed, "
            f"current unchanged{hint}")


def _tensorrt_available() -> tuple[bool, str]:
    """:func:`motops.runtime.tensorrt.tensorrt_status`, without asking the CUDA driver where TensorRT is absent.

    Most devices have no TensorRT; loading the CUDA runtime just to learn that costs time per sync.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT: the 'tensorrt' Python package is not installed"
    from motops.runtime.tensorrt import tensorrt_status

    return tensorrt_status()


def _well_formed(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    sha, size = entry.get("sha256"), entry.get("size")
    sha_ok = isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
    return sha_ok and isinstance(size, int) and not isinstance(size, bool) and size >= 0


def _safe_relpath(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and all(part not in ("..", ".", "") for part in path.parts)

"""The edge agent: follow a channel, verify what it points at, switch engines atomically, roll back.

Install folder (``fleet.install_dir``)::

    INSTALL/
      current -> versions/7        symlink the runtime loads (``motops track --engine INSTALL/current``)
      versions/6/ versions/7/      verified bundles (+ manifest.sig), the last ``keep_versions`` kept
      staging/8/                   a download in progress (resumed file by file, byte range within a file)
      plan-cache/                  TensorRT plans built here, per detector ONNX sha256, + timing cache
      state.json                   installed, previous, channel_version, last_check, last_error, ...
      .lock                        one sync at a time per folder (flock)

One sync: read the channel pointer; check its Ed25519 signature against the trusted public key
(it signs name, version and manifest digest, see :mod:`motops.fleet.signing`); refuse a
version older than the installed one (a replayed old pointer) unless rolling back; download
``manifest.json`` and check its digest is the signed one; download every listed file into
``staging/VERSION`` (files already there with the right sha256 are kept); verify sizes and
sha256 (:func:`~motops.export.bundle.verify_bundle`) and that the models load; where CUDA
and TensorRT exist and the bundle has no plan for this GPU, build one (cached); move the
folder to ``versions/VERSION`` and replace the ``current`` symlink with ``os.replace`` -- a
rename, so a reader sees the old engine or the new one, never a mix. A failure at any step
leaves ``current`` as it was and records the error in ``state.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

from motops.config import FleetParams
from motops.errors import MotopsError
from motops.export.bundle import MANIFEST_FILE, manifest_digest, sha256_file, verify_bundle
from motops.fleet.signing import (
    PublicKeyLike,
    SignatureError,
    SigningKeyError,
    load_public_key,
    public_key_fingerprint,
    verify_release,
)
from motops.fleet.store import (
    SIGNATURE_FILE,
    FleetError,
    StaleVersionError,
    VerificationError,
    check_segment,
    compare_versions,
    describe_s3_error,
    is_missing,
    parse_pointer,
    pointer_key,
    release_key,
    s3_client,
    with_env_overrides,
)
from motops.fsutil import atomic_write, fsync_dir

logger = logging.getLogger(__name__)

STATE_FILE: Final = "state.json"
CURRENT: Final = "current"
VERSIONS_DIR: Final = "versions"
STAGING_DIR: Final = "staging"
PLAN_CACHE_DIR: Final = "plan-cache"
_CHUNK: Final = 1 << 20
_STATE_DEFAULTS: Final = {
    "installed": None,
    "previous": None,
    "name": None,
    "manifest_digest": None,
    "installed_at": None,
    "channel": None,
    "channel_version": None,
    "channel_name": None,
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
    """Keeps ``install_dir/current`` on the verified release a channel points at.

    Args:
        install_dir: The agent's folder (created); ``None``: ``fleet.install_dir``.
        params: The ``fleet`` params (environment variables override them, see
            :data:`motops.fleet.store.ENV_OVERRIDES`); ``None``: the defaults.
        public_key: The trusted Ed25519 public key (object, PEM file or PEM text); ``None``:
            ``fleet.public_key`` / ``MOTOPS_PUBLIC_KEY``. Without one the agent installs nothing.
        client: A boto3 S3 client (default: one made from ``params`` on first use).
        load_check: Load each downloaded engine with ONNX Runtime before switching to it, so a
            release whose models do not load never becomes ``current``.

    Raises:
        SigningKeyError: The public key cannot be loaded. Without any key the agent can report
            :meth:`status` and :meth:`rollback`, and :meth:`sync` refuses to run.
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
    def client(self) -> Any:
        """The S3 client (made on first use)."""
        if self._client is None:
            self._client = s3_client(self.params)
        return self._client

    # ------------------------------------------------------------------ public API

    def status(self) -> dict[str, Any]:
        """What is installed and what the channel said at the last check (no network).

        Returns:
            ``state.json``'s content (``installed``, ``previous``, ``channel_version``,
            ``last_check``, ``last_error``, ...) plus ``install_dir``, ``current`` (the folder the
            symlink resolves to, or ``None``), ``channel``, ``bucket`` and
            ``public_key_fingerprint``.
        """
        state = self._read_state()
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
            "public_key_fingerprint": public_key_fingerprint(self.public_key) if self.public_key else None,
        }

    def sync(self, allow_rollback: bool = False) -> dict[str, Any]:
        """Check the channel once and install what it points at when it is newer and verifies.

        Args:
            allow_rollback: Accept a version older than (or not comparable with) the installed
                one, and re-install a version this device rolled back from.

        Returns:
            ``{"action", "version", "previous", "channel_version"}`` where ``action`` is
            ``installed``, ``up-to-date`` or ``held`` (the channel still points at the version
            :meth:`rollback` left; a newer release or ``allow_rollback`` moves on).

        Raises:
            VerificationError: The pointer's signature, the manifest digest, a file's size or
                sha256, or loading the models failed; ``current`` is untouched.
            StaleVersionError: The channel points at an older (or not comparable) version.
            FleetError: No pointer on the channel, or S3 could not be read.
        """
        self.install_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self._read_state()
            state["last_check"] = _now()
            state["channel"] = self.channel
            try:
                result = self._sync(state, allow_rollback)
            except (MotopsError, OSError) as exc:
                state["last_error"] = str(exc)
                state["last_error_at"] = state["last_check"]
                self._write_state(state)
                logger.info("sync of channel %s failed: %s", self.channel, exc)  # the caller reports it
                raise
            state["last_error"] = None
            self._write_state(state)
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
            except MotopsError as exc:
                state["last_error"] = f"rollback: {exc}"
                state["last_error_at"] = _now()
                self._write_state(state)
                raise
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

    def _sync(self, state: dict[str, Any], allow_rollback: bool) -> dict[str, Any]:
        if self.public_key is None:
            raise SigningKeyError(
                "the edge agent needs the trusted public key to install anything: set fleet.public_key or "
                "MOTOPS_PUBLIC_KEY (a PEM file)"
            )
        pointer = self._read_pointer()
        name, version, digest = pointer["name"], pointer["version"], pointer["manifest_digest"]
        try:
            verify_release(self.public_key, pointer["signature"], digest, name=name, version=version)
        except SignatureError as exc:
            raise VerificationError(f"channel pointer {self._pointer_url()}: {exc}", version=version) from None
        state.update(channel_version=version, channel_name=name)
        installed = state["installed"]
        base = {"version": version, "previous": state["previous"], "channel_version": version}
        if installed == version and self._current_is(version):
            if state["manifest_digest"] not in (None, digest):
                raise VerificationError(
                    f"channel {self.channel!r}: {name} {version} is signed with manifest {digest[:12]}…, but this "
                    f"device installed {version} as {state['manifest_digest'][:12]}…; a release must not change "
                    "under the same version: publish a new version",
                    version=version,
                )
            return {**base, "action": "up-to-date"}
        if state["held_back"] == version and not allow_rollback:
            logger.info("channel points at %s, which this device rolled back from; holding %s", version, installed)
            return {**base, "version": installed, "action": "held"}
        if installed is not None and installed != version:
            order = compare_versions(version, installed)
            if (order is None or order < 0) and not allow_rollback:
                why = "older than" if order is not None else "not comparable with"
                raise StaleVersionError(
                    f"channel {self.channel!r} points at {name} {version}, {why} the installed {installed}; "
                    "refused (a replayed old pointer?). Roll back deliberately with allow_rollback / --allow-rollback"
                )
        self._install(pointer, state)
        return {**base, "previous": state["previous"], "action": "installed"}

    def _pointer_url(self) -> str:
        return f"s3://{self.params.bucket}/{pointer_key(self.params, self.channel)}"

    def _read_pointer(self) -> dict[str, Any]:
        key = pointer_key(self.params, self.channel)
        try:
            raw = self.client.get_object(Bucket=self.params.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            if is_missing(exc):
                raise FleetError(f"{self._pointer_url()}: no release published on channel {self.channel!r}") from None
            raise FleetError(f"reading the channel pointer: {describe_s3_error(exc, self.params, key)}") from exc
        return parse_pointer(raw, self._pointer_url())

    def _install(self, pointer: dict[str, Any], state: dict[str, Any]) -> None:
        name, version, digest = pointer["name"], pointer["version"], pointer["manifest_digest"]
        target = self.version_dir(version)
        if target.is_dir() and self._kept_copy_ok(target, version, digest, state):
            logger.info("re-using the kept copy of %s in %s", version, target)
            tensorrt = state["versions"].get(version, {}).get("tensorrt")
        else:
            staging = self._download(pointer)
            tensorrt = self._maybe_build_plan(staging, digest)
            if target.exists():  # a damaged leftover: move it out of the way before the rename
                trash = target.with_name(f".{version}.trash-{uuid.uuid4().hex[:8]}")
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
            fsync_dir(target.parent)
        self._switch(version)
        previous = state["installed"] if state["installed"] != version else state["previous"]
        state["versions"][version] = {"name": name, "manifest_digest": digest, "installed_at": _now(),
                                      "tensorrt": tensorrt}
        state.update(
            installed=version,
            previous=previous,
            name=name,
            manifest_digest=digest,
            installed_at=_now(),
            held_back=None,
            tensorrt=tensorrt,
        )
        state["history"] = [v for v in state["history"] if v != version] + [version]
        self._prune(state)
        logger.info("switched %s to %s %s", self.current, name, version)

    def _download(self, pointer: dict[str, Any]) -> Path:
        """Fetch the release into ``staging/VERSION`` and verify it; return the folder."""
        name, version, digest = pointer["name"], pointer["version"], pointer["manifest_digest"]
        staging = self.install_dir / STAGING_DIR / version
        staging.mkdir(parents=True, exist_ok=True)
        manifest_path = staging / MANIFEST_FILE
        self._fetch(release_key(self.params, name, version, MANIFEST_FILE), manifest_path)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            found = manifest_digest(manifest)
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise VerificationError(f"{manifest_path}: not a JSON manifest ({exc})", version=version) from None
        if found != digest:
            raise VerificationError(
                f"manifest.json of {name} {version} has digest {found[:12]}…, but the signed pointer says "
                f"{digest[:12]}…: the manifest in the bucket was altered; nothing installed",
                version=version,
                files=[MANIFEST_FILE],
            )
        (staging / SIGNATURE_FILE).write_text(pointer["signature"] + "\n")
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise VerificationError(f"{manifest_path}: lists no files", version=version, files=[MANIFEST_FILE])
        bad: list[str] = []
        for rel, entry in files.items():
            if not _safe_relpath(rel) or rel in (MANIFEST_FILE, SIGNATURE_FILE) or not _well_formed(entry):
                raise VerificationError(
                    f"{manifest_path}: file entry {rel!r} is unsafe, reserved or malformed; expected a relative "
                    "path inside the bundle with {role, sha256 (64 hex), size (bytes)}",
                    version=version,
                    files=[MANIFEST_FILE],
                )
            local = staging / rel
            if local.is_file() and local.stat().st_size == entry.get("size") and sha256_file(local) == entry.get(
                "sha256"
            ):
                continue  # finished by an earlier, interrupted sync
            local.parent.mkdir(parents=True, exist_ok=True)
            ok = self._fetch(release_key(self.params, name, version, rel), local, entry)
            if not ok:
                bad.append(rel)
        listed = {MANIFEST_FILE, SIGNATURE_FILE, *files}
        for leftover in sorted(staging.rglob("*"), reverse=True):  # deepest first, so emptied folders go too
            rel = leftover.relative_to(staging).as_posix()
            if leftover.is_dir() and not leftover.is_symlink():
                with contextlib.suppress(OSError):
                    leftover.rmdir()
            elif rel not in listed:  # every fetch has finished: a .part left here is stale too
                leftover.unlink()
        if bad:
            raise VerificationError(
                f"release {name} {version}: {', '.join(bad)} in the bucket do(es) not match the signed manifest "
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

    def _fetch(self, key: str, dest: Path, entry: dict[str, Any] | None = None) -> bool:
        """Download ``key`` to ``dest`` through ``dest.part``, resuming a partial download by byte range.

        With ``entry`` ({size, sha256}) the bytes are checked before ``dest`` is replaced; when a
        resumed part turns out wrong the file is fetched once more from the start, and a
        mismatch after that removes the partial file and returns False. Without ``entry``
        (``manifest.json``, checked by digest afterwards) the file is always fetched whole.
        """
        part = dest.with_name(dest.name + ".part")
        if entry is None:
            part.unlink(missing_ok=True)
        resumed = part.is_file() and part.stat().st_size > 0
        digest = self._fetch_part(key, part, entry)
        good = entry is None or (part.stat().st_size == entry["size"] and digest == entry["sha256"])
        if not good and resumed:
            logger.warning("%s: the resumed partial download was wrong; fetching it again from the start", key)
            part.unlink(missing_ok=True)
            digest = self._fetch_part(key, part, entry)
            good = part.stat().st_size == entry["size"] and digest == entry["sha256"]
        if not good:
            logger.warning("%s: size or sha256 differs from the manifest; discarded", key)
            part.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
            return False
        os.replace(part, dest)
        return True

    def _fetch_part(self, key: str, part: Path, entry: dict[str, Any] | None) -> str:
        """Bring ``part`` up to the object's end (by byte range when it holds a prefix); return its sha256."""
        expected_size = entry["size"] if entry else None
        offset = part.stat().st_size if part.is_file() else 0
        if expected_size is not None and offset > expected_size:
            part.unlink()
            offset = 0
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        if offset and offset == expected_size:
            return digest.hexdigest()  # complete already (the rename was interrupted); only the checks remain
        kwargs: dict[str, Any] = {"Bucket": self.params.bucket, "Key": key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            response = self.client.get_object(**kwargs)
            resuming = offset and response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206
            if not resuming:  # the whole object came back: start the part file over
                digest = hashlib.sha256()
            with open(part, "ab" if resuming else "wb") as fh:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            if is_missing(exc):
                raise VerificationError(
                    f"s3://{self.params.bucket}/{key}: missing from the bucket, though the signed manifest lists it",
                    files=[part.name.removesuffix(".part")],
                ) from None
            raise FleetError(
                f"downloading {describe_s3_error(exc, self.params, key)} (the next sync resumes it)"
            ) from exc
        return digest.hexdigest()

    def _check_loads(self, folder: Path, version: str) -> None:
        from motops.export.bundle import load_bundle

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
        from motops.export import tensorrt as trt

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
        state = json.loads(json.dumps(_STATE_DEFAULTS))
        try:
            loaded = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            logger.warning("%s unreadable (%s); starting from an empty state", self.state_path, exc)
            return state
        if isinstance(loaded, dict):
            state.update({k: v for k, v in loaded.items() if k in _STATE_DEFAULTS})
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_path, json.dumps(state, indent=2, sort_keys=False).encode() + b"\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One sync or rollback at a time in this install folder (other processes wait)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        with open(self.install_dir / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- helpers


def _is_aws_error(exc: BaseException) -> bool:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | Boto3Error)


def _tensorrt_available() -> tuple[bool, str]:
    """:func:`motops.export.tensorrt.tensorrt_status`, without importing torch where TensorRT is absent.

    Most devices have no TensorRT; importing torch just to learn that costs seconds per sync.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT: the 'tensorrt' Python package is not installed"
    from motops.export.tensorrt import tensorrt_status

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

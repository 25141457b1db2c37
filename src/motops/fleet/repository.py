"""The publisher's side of The Update Framework (python-tuf's ``tuf.api.metadata``), one repository per channel.

Bucket layout (``PREFIX`` is ``fleet.prefix``)::

    PREFIX/NAME/VERSION/<bundle file>        the release's files (targets), shared by every channel
    PREFIX/NAME/VERSION/manifest.json        the bundle manifest (a target too)
    PREFIX/tuf/CHANNEL/N.root.json           the chain of roots: N+1 is signed by N's root keys and its own
    PREFIX/tuf/CHANNEL/N.targets.json        every file of the channel's release: length, sha256, and
                                             custom {name, version, channel, role}; signed by the targets key
    PREFIX/tuf/CHANNEL/N.snapshot.json       the targets version (+ length, sha256); online key
    PREFIX/tuf/CHANNEL/timestamp.json        the snapshot version; short expiry, re-signed on a schedule; written last

Every signed part carries ``"x-motops-channel": CHANNEL`` (:data:`~motops.fleet.store.CHANNEL_FIELD`),
so metadata copied from one channel to another is refused by the device, and each channel has its
own version numbers. Keys are the Ed25519 PEM files of :mod:`motops.fleet.signing`:

* root (``fleet.root_keys``, ``fleet.root_threshold``): offline; signs roots only;
* targets (``fleet.signing_key``): signs releases;
* snapshot + timestamp (``fleet.timestamp_key``, default the signing key): online, for the re-sign flow.

With no ``root_keys`` the signing key is the one root key (the simple set-up; rotate later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from motops.config import FleetParams
from motops.fleet.signing import SigningKeyError, load_private_key
from motops.fleet.store import (
    CHANNEL_FIELD,
    ISSUED_FIELD,
    FleetError,
    VerificationError,
    check_segment,
    describe_s3_error,
    is_missing,
    metadata_key,
    s3_client,
    with_env_overrides,
)

#: Most roots a publisher walks to find the newest one.
MAX_ROOTS: Final = 1024
_ROLES: Final = ("root", "targets", "snapshot", "timestamp")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """``2026-01-31T12:00:00Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def signer_for(path: str | Any, role: str) -> Any:
    """A securesystemslib signer for an Ed25519 private key PEM (path, PEM text or key object)."""
    from securesystemslib.signer import CryptoSigner

    try:
        return CryptoSigner(load_private_key(path))
    except SigningKeyError as exc:
        raise SigningKeyError(f"{role} key: {exc}") from None


def public_key_of(signer: Any) -> Any:
    """The signer's TUF public key (an ``SSlibKey``)."""
    return signer.public_key


@dataclass
class Signers:
    """The publisher's keys, as signers, by role."""

    root: list[Any]
    targets: Any | None
    online: Any | None  # snapshot and timestamp

    @classmethod
    def from_params(cls, params: FleetParams, *, need_root: bool = False, need_targets: bool = False) -> Signers:
        """Load the keys named in ``params`` (only those the operation needs must be there).

        Raises:
            SigningKeyError: A needed key is not configured or cannot be loaded.
        """
        targets = signer_for(params.signing_key, "fleet.signing_key") if params.signing_key else None
        online_path = params.timestamp_key or params.signing_key
        online = signer_for(online_path, "fleet.timestamp_key") if online_path else None
        root_paths = list(params.root_keys) or ([params.signing_key] if params.signing_key else [])
        root = [signer_for(p, "fleet.root_keys") for p in root_paths] if need_root else []
        if need_targets and targets is None:
            raise SigningKeyError("no signing key: set fleet.signing_key or MOTOPS_SIGNING_KEY (a PEM file)")
        if online is None and (need_targets or need_root):
            raise SigningKeyError("no timestamp key: set fleet.timestamp_key (or fleet.signing_key)")
        if need_root and not root:
            raise SigningKeyError("no root key: set fleet.root_keys (or fleet.signing_key for a one-key set-up)")
        return cls(root, targets, online)


@dataclass
class RepoState:
    """A channel's metadata as found in the bucket (``None`` where absent)."""

    channel: str
    roots: list[Any]  # Metadata[Root], oldest first
    targets: Any | None
    snapshot: Any | None
    timestamp: Any | None

    @property
    def root(self) -> Any:
        """The newest root."""
        return self.roots[-1]

    def release(self) -> dict[str, Any] | None:
        """``{name, version}`` of the release the targets list, or ``None``."""
        if self.targets is None:
            return None
        for target in self.targets.signed.targets.values():
            custom = target.custom or {}
            if "name" in custom and "version" in custom:
                return {"name": custom["name"], "version": custom["version"]}
        return None


class Repository:
    """One channel's TUF repository in the fleet bucket.

    Args:
        params: The ``fleet`` params (environment overrides applied here).
        channel: The channel (``None``: ``fleet.channel``).
        client: A boto3 S3 client (default: one made from ``params``).
    """

    def __init__(self, params: FleetParams, channel: str | None = None, *, client: Any = None) -> None:
        self.params = with_env_overrides(params)
        self.channel = check_segment(channel or self.params.channel, "channel")
        self.client = client if client is not None else s3_client(self.params)

    # ------------------------------------------------------------------ reading

    def key(self, filename: str) -> str:
        """Key of ``PREFIX/tuf/CHANNEL/filename``."""
        return metadata_key(self.params, self.channel, filename)

    def _get(self, filename: str) -> bytes | None:
        key = self.key(filename)
        try:
            return self.client.get_object(Bucket=self.params.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if is_missing(exc):
                return None
            raise FleetError(f"reading {describe_s3_error(exc, self.params, key)}") from exc

    def _put(self, filename: str, data: bytes) -> None:
        from motops.fleet.publish import put_bytes

        key = self.key(filename)
        try:
            put_bytes(self.client, self.params.bucket, key, data, "application/json", cache_control="no-cache")
        except Exception as exc:
            if getattr(exc, "response", None) is None and not type(exc).__module__.startswith("botocore"):
                raise
            raise FleetError(f"writing {describe_s3_error(exc, self.params, key)}") from exc

    def _parse(self, data: bytes, filename: str, role: str) -> Any:
        from tuf.api.metadata import Metadata

        where = f"s3://{self.params.bucket}/{self.key(filename)}"
        try:
            md = Metadata.from_bytes(data)
        except Exception as exc:  # DeserializationError and friends
            raise VerificationError(f"{where}: not TUF metadata ({exc})") from None
        if md.signed.type != role:
            raise VerificationError(f"{where}: a {md.signed.type} metadata; expected {role}")
        found = md.signed.unrecognized_fields.get(CHANNEL_FIELD)
        if found != self.channel:
            raise VerificationError(f"{where}: signed for channel {found!r}; expected {self.channel!r}")
        return md

    def load(self) -> RepoState:
        """The channel's roots (checked link by link), targets, snapshot and timestamp.

        Raises:
            FleetError: No root: the channel has no repository yet (``motops fleet init``).
            VerificationError: A root does not verify against its predecessor, or metadata is malformed.
        """
        roots: list[Any] = []
        for version in range(1, MAX_ROOTS + 1):
            data = self._get(f"{version}.root.json")
            if data is None:
                break
            root = self._parse(data, f"{version}.root.json", "root")
            if root.signed.version != version:
                raise VerificationError(f"{self.key(f'{version}.root.json')}: holds root version {root.signed.version}")
            try:
                if roots:
                    roots[-1].signed.verify_delegate("root", root.signed_bytes, root.signatures)
                root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
            except Exception as exc:
                raise VerificationError(f"{self.key(f'{version}.root.json')}: does not verify: {exc}") from None
            roots.append(root)
        if not roots:
            raise FleetError(
                f"channel {self.channel!r} has no TUF repository at s3://{self.params.bucket}/{self.key('')}: run "
                "`motops fleet init` (or publish with fleet.signing_key set, which creates it)"
            )
        root = roots[-1]
        timestamp = self._load_role("timestamp.json", "timestamp", root)
        snapshot = targets = None
        if timestamp is not None:
            snapshot = self._load_role(f"{timestamp.signed.snapshot_meta.version}.snapshot.json", "snapshot", root)
            if snapshot is not None:
                meta = snapshot.signed.meta["targets.json"]
                targets = self._load_role(f"{meta.version}.targets.json", "targets", root)
        return RepoState(self.channel, roots, targets, snapshot, timestamp)

    def _load_role(self, filename: str, role: str, root: Any) -> Any | None:
        """The role's metadata, its signatures checked against ``root`` (the publisher never builds on forged ones)."""
        data = self._get(filename)
        if data is None:
            return None
        md = self._parse(data, filename, role)
        try:
            root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
        except Exception as exc:
            raise VerificationError(
                f"s3://{self.params.bucket}/{self.key(filename)}: does not verify with the {role} key(s) of root "
                f"version {root.signed.version} ({exc}): the bucket was tampered with or a key rotation was not "
                "finished; restore it from the last good publish or re-run `motops fleet rotate`"
            ) from None
        return md

    def exists(self) -> bool:
        """Whether ``1.root.json`` is in the bucket."""
        return self._get("1.root.json") is not None

    # ------------------------------------------------------------------ writing

    def _signed_fields(self, *, issued: bool = False) -> dict[str, Any]:
        fields: dict[str, Any] = {CHANNEL_FIELD: self.channel}
        if issued:
            fields[ISSUED_FIELD] = iso(_now())
        return fields

    def _root(self, version: int, signers: Signers, root_signers: Sequence[Any], threshold: int) -> Any:
        from tuf.api.metadata import Metadata, Role, Root

        keys = {}
        roles = {}
        members = {"root": list(root_signers), "targets": [signers.targets], "snapshot": [signers.online],
                   "timestamp": [signers.online]}
        for role in _ROLES:
            ids = []
            for signer in members[role]:
                key = public_key_of(signer)
                keys[key.keyid] = key
                ids.append(key.keyid)
            roles[role] = Role(sorted(set(ids)), threshold if role == "root" else 1)
        if threshold > len(roles["root"].keyids):
            raise SigningKeyError(
                f"fleet.root_threshold {threshold}: only {len(roles['root'].keyids)} distinct root key(s) given"
            )
        expires = _now() + timedelta(seconds=self.params.root_expiry_s)
        return Metadata(Root(version=version, expires=expires, keys=keys, roles=roles, consistent_snapshot=True,
                             unrecognized_fields=self._signed_fields()))

    def init(self, signers: Signers | None = None) -> dict[str, Any]:
        """Create root version 1 of the channel, signed by every root key.

        Raises:
            FleetError: The channel already has a root (rotate instead).
            SigningKeyError: Keys missing, or fewer root keys than the threshold.
        """
        signers = signers or Signers.from_params(self.params, need_root=True, need_targets=True)
        if self.exists():
            raise FleetError(
                f"s3://{self.params.bucket}/{self.key('1.root.json')}: channel {self.channel!r} already has a root; "
                "change keys with `motops fleet rotate`"
            )
        root = self._root(1, signers, signers.root, self.params.root_threshold)
        for signer in signers.root:
            root.sign(signer, append=True)
        self._put("1.root.json", root.to_bytes())
        return {"channel": self.channel, "root_version": 1, "root_keys": root.signed.roles["root"].keyids,
                "root_threshold": root.signed.roles["root"].threshold, "root_key": self.key("1.root.json")}

    def _check_signer(self, state: RepoState, role: str, signer: Any, what: str) -> None:
        keyid = public_key_of(signer).keyid
        if keyid not in state.root.signed.roles[role].keyids:
            raise SigningKeyError(
                f"{what} (key id {keyid[:12]}…) is not a {role} key of root version {state.root.signed.version} of "
                f"channel {self.channel!r}: use the key the root names, or rotate with `motops fleet rotate`"
            )

    def write_release(self, targets: dict[str, Any], state: RepoState, signers: Signers) -> dict[str, Any]:
        """Sign new targets (the release's files), snapshot and timestamp; timestamp last.

        Args:
            targets: ``{path: TargetFile}``.
            state: :meth:`load`'s result.
            signers: Needs ``targets`` and ``online``.
        """
        from tuf.api.metadata import Metadata, Targets

        self._check_signer(state, "targets", signers.targets, "fleet.signing_key")
        version = state.targets.signed.version + 1 if state.targets else 1
        expires = _now() + timedelta(seconds=self.params.targets_expiry_s)
        md = Metadata(Targets(version=version, expires=expires, targets=targets,
                              unrecognized_fields=self._signed_fields(issued=True)))
        md.sign(signers.targets)
        data = md.to_bytes()
        self._put(f"{version}.targets.json", data)
        state.targets = md
        return self._write_snapshot(state, signers, data)

    def _write_snapshot(self, state: RepoState, signers: Signers, targets_data: bytes | None = None) -> dict[str, Any]:
        from tuf.api.metadata import Metadata, MetaFile, Snapshot

        self._check_signer(state, "snapshot", signers.online, "fleet.timestamp_key")
        if targets_data is None:
            targets_data = state.targets.to_bytes()
        version = state.snapshot.signed.version + 1 if state.snapshot else 1
        expires = _now() + timedelta(seconds=self.params.snapshot_expiry_s)
        meta = {"targets.json": MetaFile.from_data(state.targets.signed.version, targets_data, ["sha256"])}
        md = Metadata(Snapshot(version=version, expires=expires, meta=meta,
                               unrecognized_fields=self._signed_fields(issued=True)))
        md.sign(signers.online)
        data = md.to_bytes()
        self._put(f"{version}.snapshot.json", data)
        state.snapshot = md
        return self._write_timestamp(state, signers, data)

    def _write_timestamp(
        self, state: RepoState, signers: Signers, snapshot_data: bytes | None = None
    ) -> dict[str, Any]:
        from tuf.api.metadata import Metadata, MetaFile, Timestamp

        self._check_signer(state, "timestamp", signers.online, "fleet.timestamp_key")
        if snapshot_data is None:
            snapshot_data = state.snapshot.to_bytes()
        version = state.timestamp.signed.version + 1 if state.timestamp else 1
        expires = _now() + timedelta(seconds=self.params.timestamp_expiry_s)
        meta = MetaFile.from_data(state.snapshot.signed.version, snapshot_data, ["sha256"])
        md = Metadata(Timestamp(version=version, expires=expires, snapshot_meta=meta,
                                unrecognized_fields=self._signed_fields(issued=True)))
        md.sign(signers.online)
        self._put("timestamp.json", md.to_bytes())
        state.timestamp = md
        return versions(state)

    def resign(self, signers: Signers | None = None) -> dict[str, Any]:
        """Re-sign the timestamp, and the snapshot and targets too when half their lifetime is gone.

        What the ``resign`` deployment runs on a schedule so a healthy channel never expires.

        Returns:
            :func:`versions` plus ``resigned`` (the roles written).

        Raises:
            FleetError: The channel has nothing published yet.
        """
        state = self.load()
        if state.targets is None or state.snapshot is None or state.timestamp is None:
            raise FleetError(f"channel {self.channel!r}: nothing published yet, so there is no timestamp to re-sign")
        now = _now()

        def stale(md: Any, lifetime: float) -> bool:
            return md.signed.expires - now < timedelta(seconds=lifetime / 2)

        resigned = ["timestamp"]
        if stale(state.targets, self.params.targets_expiry_s):
            signers = signers or Signers.from_params(self.params, need_targets=True)
            result = self.write_release(dict(state.targets.signed.targets), state, signers)
            resigned = ["targets", "snapshot", "timestamp"]
        else:
            signers = signers or Signers.from_params(self.params)
            if signers.online is None:
                raise SigningKeyError("no timestamp key: set fleet.timestamp_key (or fleet.signing_key)")
            if stale(state.snapshot, self.params.snapshot_expiry_s):
                result = self._write_snapshot(state, signers)
                resigned = ["snapshot", "timestamp"]
            else:
                result = self._write_timestamp(state, signers)
        return {**result, "resigned": resigned}

    def rotate(self, new: Signers, *, threshold: int | None = None, current: Signers | None = None) -> dict[str, Any]:
        """Write root N+1 with new keys (a key left out is revoked), then re-sign targets, snapshot, timestamp.

        Root N+1 is signed by a threshold of root N's keys (``current.root``, from ``params``) and of
        its own (``new.root``): devices follow the chain without being touched.

        Args:
            new: The keys after the rotation (root, targets, online).
            threshold: Root threshold of the new root (``None``: ``fleet.root_threshold``).
            current: The keys now (``None``: from ``params``).

        Raises:
            SigningKeyError: Too few of the current root keys to meet root N's threshold.
        """
        current = current or Signers.from_params(self.params, need_root=True)
        state = self.load()
        old = state.root.signed
        held = [s for s in current.root if public_key_of(s).keyid in old.roles["root"].keyids]
        if len(held) < old.roles["root"].threshold:
            raise SigningKeyError(
                f"channel {self.channel!r}: root version {old.version} needs {old.roles['root'].threshold} of its root "
                f"keys to sign a new root; fleet.root_keys holds {len(held)} of them"
            )
        root = self._root(old.version + 1, new, new.root, threshold or self.params.root_threshold)
        for signer in {public_key_of(s).keyid: s for s in [*held, *new.root]}.values():
            root.sign(signer, append=True)
        self._put(f"{old.version + 1}.root.json", root.to_bytes())
        state.roots.append(root)
        result = {"root_version": old.version + 1}
        if state.targets is not None and state.snapshot is not None and state.timestamp is not None:
            result.update(self.write_release(dict(state.targets.signed.targets), state, new))
        return result


def versions(state: RepoState) -> dict[str, Any]:
    """``{channel, root_version, targets_version, snapshot_version, timestamp_version, timestamp_expires}``."""
    return {
        "channel": state.channel,
        "root_version": state.root.signed.version,
        "targets_version": state.targets.signed.version if state.targets else None,
        "snapshot_version": state.snapshot.signed.version if state.snapshot else None,
        "timestamp_version": state.timestamp.signed.version if state.timestamp else None,
        "timestamp_expires": iso(state.timestamp.signed.expires) if state.timestamp else None,
    }


def release_targets(
    files: dict[str, dict[str, Any]], *, manifest: bytes, name: str, version: str, channel: str, path_of: Any
) -> dict[str, Any]:
    """The TUF targets of a release: every bundle file and ``manifest.json``, with custom name/version/channel/role.

    Args:
        files: The manifest's ``files`` ({rel: {role, sha256, size}}).
        manifest: ``manifest.json``'s bytes.
        path_of: ``rel -> target path`` (``NAME/VERSION/rel``).
    """
    import hashlib

    from tuf.api.metadata import TargetFile

    from motops.runtime.bundle import MANIFEST_FILE

    def custom(role: str) -> dict[str, Any]:
        return {"custom": {"name": name, "version": version, "channel": channel, "role": role}}

    out = {}
    for rel, entry in files.items():
        path = path_of(rel)
        out[path] = TargetFile(entry["size"], {"sha256": entry["sha256"]}, path, custom(entry["role"]))
    path = path_of(MANIFEST_FILE)
    out[path] = TargetFile(len(manifest), {"sha256": hashlib.sha256(manifest).hexdigest()}, path, custom("manifest"))
    return out

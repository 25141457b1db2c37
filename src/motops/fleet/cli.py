"""``motops publish``, ``motops fleet init|rotate|resign|show`` and ``motops edge sync|status|rollback|run|keygen``.

Mounted on the main ``motops`` app by :func:`register`; also runnable alone as
``python -m motops.fleet.cli`` (what the tests and a minimal edge image use).

Exit codes: ``0`` done; ``1`` the operation failed or was refused on its merits (an S3 request
failed, a release failed verification, the channel points at an older version); ``2`` the
input is wrong (params, keys, options, a damaged bundle to publish).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from motops.cli_common import ParamsOption, SetOption, fail, params_from
from motops.config import FleetParams
from motops.errors import ConfigError, MotopsError

InstallDirOption = Annotated[
    Path | None, typer.Option("--install-dir", help="Agent folder (default: fleet.install_dir or MOTOPS_EDGE_DIR).")
]
PublicKeyOption = Annotated[
    Path | None,
    typer.Option("--public-key", help="Ed25519 public key PEM that signed root v1 (default: fleet.public_key)."),
]
ChannelOption = Annotated[str | None, typer.Option(help="The channel (default: fleet.channel).")]

fleet_app = typer.Typer(
    help="The channels' TUF repositories in the fleet bucket: create, rotate or revoke keys, re-sign the timestamp.",
    no_args_is_help=True,
)
edge_app = typer.Typer(
    help="The edge agent: follow a channel, verify and install engines atomically, roll back.",
    no_args_is_help=True,
)


def _exit_code(exc: MotopsError) -> int:
    from motops.fleet.signing import SigningKeyError
    from motops.fleet.store import FleetError
    from motops.runtime.bundle import BundleError

    if isinstance(exc, ConfigError | SigningKeyError | BundleError):
        return 2
    return 1 if isinstance(exc, FleetError) else 2


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def publish(
    bundle: Annotated[Path | None, typer.Option(help="A local engine bundle folder to publish.")] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(help="An MLflow model URI whose bundle is published (default: models:/NAME@champion)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Release name (default: the model URI's name, else registry.model_name).")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Release version (default: the manifest's model_version).")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Channel to publish on (default: fleet.channel).")] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(help="TUF targets key, Ed25519 PEM (default: fleet.signing_key or MOTOPS_SIGNING_KEY)."),
    ] = None,
    allow_older: Annotated[
        bool, typer.Option("--allow-older", help="Point the channel at an older version (fleet-wide rollback).")
    ] = False,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket", help="Create fleet.bucket first when it does not exist.")
    ] = False,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Upload an engine bundle to the fleet bucket, then sign it into the channel's TUF metadata (timestamp last)."""
    from motops.fleet.publish import publish_bundle, publish_model

    try:
        params = params_from(params_file, overrides)
        if bundle is not None and model_uri is not None:
            raise ConfigError("give at most one of --bundle DIR or --model-uri URI")
        if create_bucket:
            from motops.fleet.store import ensure_bucket

            ensure_bucket(params.fleet)
        progress = lambda event, item: typer.echo(f"{event}: {item}", err=True)  # noqa: E731
        if bundle is None:
            result = publish_model(params, model_uri=model_uri, name=name, version=version, channel=channel,
                                   signing_key=signing_key, allow_older=allow_older, on_progress=progress,
                                   root=Path.cwd())
        else:
            result = publish_bundle(
                bundle,
                name=name or params.registry.model_name,
                version=version,
                params=params.fleet,
                signing_key=signing_key,
                channel=channel,
                allow_older=allow_older,
                on_progress=progress,
            )
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None
    _echo_json(result)


def _repository(params_file: Path, overrides: list[str] | None, channel: str | None) -> Any:
    from motops.fleet.repository import Repository

    return Repository(params_from(params_file, overrides).fleet, channel)


@fleet_app.command("init")
def fleet_init(
    channel: ChannelOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Create root version 1 of a channel from fleet.root_keys (or the signing key), root_threshold, signing and
    timestamp keys. Prints the root's key ids; give devices its file as fleet.trusted_root."""
    try:
        _echo_json(_repository(params_file, overrides, channel).init())
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


@fleet_app.command("rotate")
def fleet_rotate(
    new_root_key: Annotated[
        list[Path] | None,
        typer.Option("--new-root-key", help="A root key of the new root (repeat); default: the same."),
    ] = None,
    new_signing_key: Annotated[Path | None, typer.Option(help="The new targets key (default: the same).")] = None,
    new_timestamp_key: Annotated[
        Path | None, typer.Option(help="The new snapshot/timestamp key (default: the same).")
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(help="Root threshold of the new root (default: fleet.root_threshold).")
    ] = None,
    channel: ChannelOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Write root N+1 with new keys, signed by the current root keys (fleet.root_keys) and the new ones; a key left
    out is revoked. Then re-signs targets, snapshot and timestamp. Devices follow without being touched."""
    from motops.fleet.repository import Signers, signer_for

    try:
        params = params_from(params_file, overrides).fleet
        current = Signers.from_params(params, need_root=True, need_targets=True)
        new = Signers(
            root=[signer_for(p, "--new-root-key") for p in new_root_key] if new_root_key else current.root,
            targets=signer_for(new_signing_key, "--new-signing-key") if new_signing_key else current.targets,
            online=signer_for(new_timestamp_key, "--new-timestamp-key") if new_timestamp_key else current.online,
        )
        _echo_json(_repository(params_file, overrides, channel).rotate(new, threshold=threshold, current=current))
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


@fleet_app.command("resign")
def fleet_resign(
    channel: ChannelOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Re-sign the channel's timestamp (and snapshot/targets near expiry); what the `resign` deployment runs."""
    try:
        _echo_json(_repository(params_file, overrides, channel).resign())
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


@fleet_app.command("show")
def fleet_show(
    channel: ChannelOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Print the channel's release, metadata versions and timestamp expiry."""
    from motops.fleet.repository import versions

    try:
        state = _repository(params_file, overrides, channel).load()
        _echo_json({**versions(state), "release": state.release(),
                    "root_keys": state.root.signed.roles["root"].keyids,
                    "root_threshold": state.root.signed.roles["root"].threshold})
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


def _agent(install_dir: Path | None, public_key: Path | None, params_file: Path, overrides: list[str] | None) -> Any:
    from motops.fleet.agent import EdgeAgent
    from motops.fleet.store import with_env_overrides

    fleet: FleetParams = with_env_overrides(params_from(params_file, overrides).fleet)
    return EdgeAgent(install_dir, fleet, public_key)


@edge_app.command("sync")
def edge_sync(
    allow_rollback: Annotated[
        bool, typer.Option("--allow-rollback", help="Accept an older version than the installed one.")
    ] = False,
    install_dir: InstallDirOption = None,
    public_key: PublicKeyOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Check the channel once; download, verify and switch to a newer release. Prints JSON."""
    try:
        result = _agent(install_dir, public_key, params_file, overrides).sync(allow_rollback=allow_rollback)
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None
    _echo_json(result)


@edge_app.command("status")
def edge_status(
    install_dir: InstallDirOption = None,
    public_key: PublicKeyOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Print the installed and channel versions, the trusted root version, the timestamp's age and expiry, the
    last error, and which detector variant this device runs and why (variant) as JSON."""
    from motops.runtime.select import describe_variant

    try:
        status = _agent(install_dir, public_key, params_file, overrides).status()
        drop = params_from(params_file, overrides).track.int8_max_map50_drop
        _echo_json({**status, "variant": describe_variant(status.get("current"), max_map50_drop=drop)})
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


@edge_app.command("rollback")
def edge_rollback(
    install_dir: InstallDirOption = None,
    public_key: PublicKeyOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Switch back to the previous installed version (kept on disk, re-verified) and hold there."""
    try:
        _echo_json(_agent(install_dir, public_key, params_file, overrides).rollback())
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None


@edge_app.command("run")
def edge_run(
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between checks (default: fleet.poll_interval_s).", min=0.1)
    ] = None,
    install_dir: InstallDirOption = None,
    public_key: PublicKeyOption = None,
    params_file: ParamsOption = Path("params.yaml"),
    overrides: SetOption = None,
) -> None:
    """Run the agent as a service: sync, wait, repeat; SIGTERM/SIGINT stop it after the current sync."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent = _agent(install_dir, public_key, params_file, overrides)
        trusted = agent.params.trusted_root or (agent.metadata_dir / "root.json").exists()
        if agent.public_key is None and not trusted:
            from motops.fleet.signing import SigningKeyError

            raise SigningKeyError(
                "edge run: no trusted root (set fleet.trusted_root / MOTOPS_TRUSTED_ROOT, or fleet.public_key / "
                "MOTOPS_PUBLIC_KEY / --public-key: the key that signed the channel's root version 1)"
            )
    except MotopsError as exc:
        raise fail(exc, _exit_code(exc)) from None
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        logging.getLogger(__name__).info("signal %s: stopping after the current sync", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    agent.run_forever(poll_interval, stop=stop)


@edge_app.command("keygen")
def edge_keygen(
    private: Annotated[Path, typer.Option("--private", help="Private key file to create (PEM, mode 0600).")] = Path(
        "fleet_signing.pem"
    ),
    public: Annotated[Path, typer.Option("--public", help="Public key file to create (PEM), for the devices.")] = Path(
        "fleet_public.pem"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
) -> None:
    """Create an Ed25519 key pair (PEM): for any TUF role (root, targets, timestamp); devices may get the public
    key of the first root key as fleet.public_key."""
    from motops.fleet.signing import generate_keypair, public_key_fingerprint

    try:
        priv, pub = generate_keypair(private, public, overwrite=force)
    except MotopsError as exc:
        raise fail(exc, 2) from None
    _echo_json({"private_key": str(priv), "public_key": str(pub), "fingerprint": public_key_fingerprint(pub)})


def register(app: typer.Typer) -> None:
    """Add ``publish`` and the ``fleet`` and ``edge`` groups to the main ``motops`` app."""
    app.command("publish")(publish)
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(edge_app, name="edge")


def main() -> None:  # pragma: no cover - console entry point
    """Run the fleet commands alone (``python -m motops.fleet.cli publish|edge ...``)."""
    app = typer.Typer(name="motops", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

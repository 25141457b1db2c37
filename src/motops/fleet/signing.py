"""Ed25519 key files: what every TUF role key of the fleet is (see :mod:`motops.fleet.repository`).

Keys are PEM files: the private key PKCS#8 (unencrypted, mode 0600; keep it in a secret
store), the public key SubjectPublicKeyInfo. Where a path is expected, PEM text itself
(starting with ``-----BEGIN``) is accepted too, which suits keys passed in environment
variables from a secret. The public key of the first root key is also what a device
configured before TUF (``fleet.public_key``) checks the channel's ``1.root.json`` against.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from motops.errors import MotopsError
from motops.fsutil import atomic_write

PrivateKeyLike = Ed25519PrivateKey | str | Path
PublicKeyLike = Ed25519PublicKey | str | Path


class SigningKeyError(MotopsError):
    """A key file is missing, unreadable, not PEM, or not an Ed25519 key of the expected kind."""


def generate_keypair(
    private_path: str | Path, public_path: str | Path, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Create an Ed25519 key pair as PEM files.

    Args:
        private_path: Where the private key goes (PKCS#8 PEM, created with mode 0600).
        public_path: Where the public key goes (SubjectPublicKeyInfo PEM).
        overwrite: Replace existing files. Without it an existing file is refused, so a key
            that devices already trust is never lost by accident.

    Returns:
        ``(private_path, public_path)``.

    Raises:
        SigningKeyError: A file exists and ``overwrite`` is false.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise SigningKeyError(f"{private_path}: the private and the public key need different files")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise SigningKeyError(f"{path}: exists; refusing to replace a key (pass overwrite / --force)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


def _pem_bytes(source: str | Path, what: str) -> tuple[bytes, str]:
    """The PEM bytes of ``source`` (a path, or PEM text) and how to name it in errors."""
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode(), f"{what} (PEM text)"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: {what} not found (create a pair with `motops edge keygen`)") from None
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_private_key(source: PrivateKeyLike) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file, PEM text, or a key object.

    Raises:
        SigningKeyError: Missing or unreadable file, not PEM, encrypted, or not an Ed25519 private key.
    """
    if isinstance(source, Ed25519PrivateKey):
        return source
    data, where = _pem_bytes(source, "private signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"{where}: the private key is encrypted; expected an unencrypted PKCS#8 PEM") from None
    except ValueError as exc:
        hint = " (this is a public key; signing needs the private one)" if b"PUBLIC KEY" in data else ""
        raise SigningKeyError(f"{where}: not a PEM private key{hint} ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where}: a {type(key).__name__.lstrip('_')}; expected an Ed25519 private key")
    return key


def load_public_key(source: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, PEM text, or a key object.

    Raises:
        SigningKeyError: Missing or unreadable file, not PEM, or not an Ed25519 public key.
    """
    if isinstance(source, Ed25519PublicKey):
        return source
    data, where = _pem_bytes(source, "trusted public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        hint = " (this looks like a private key; devices get the public one)" if b"PRIVATE KEY" in data else ""
        raise SigningKeyError(f"{where}: not a PEM public key{hint} ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{where}: a {type(key).__name__.lstrip('_')}; expected an Ed25519 public key")
    return key


def public_key_fingerprint(public_key: PublicKeyLike) -> str:
    """sha256 (hex, first 16 digits) of the raw public key: a short id to compare keys by."""
    raw = load_public_key(public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]

"""Ed25519 signing of ledger records (and the ledger's HEAD) with `cryptography`.

Key formats accepted everywhere: PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``, unencrypted) or the
base64 of the 32 raw private-key bytes; public keys as SubjectPublicKeyInfo PEM or base64 of the 32
raw public-key bytes. Key material never appears in an exception message, a log line or a repr: errors
name the file or the environment variable, never the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firedrill.errors import ConfigError

PublicKeyLike = Ed25519PublicKey | str | bytes

_PRIVATE_FORMATS = "PKCS#8 PEM or base64 of 32 raw bytes"
_PUBLIC_FORMATS = "SubjectPublicKeyInfo PEM or base64 of 32 raw bytes"


class Signer:
    """Holds an Ed25519 private key. Build it with `from_file`, `from_env` or `generate_key`."""

    __slots__ = ("_key", "source")

    def __init__(self, key: Ed25519PrivateKey, *, source: str = "memory") -> None:
        self._key = key
        self.source = source  # where the key came from (a path or "$VAR"), never the key

    @classmethod
    def from_file(cls, path: Path | str) -> Signer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"signing key file not found: {path}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read signing key file {path}: {exc.strerror}") from exc
        return cls(_parse_private_key(data, where=f"signing key file {path}"), source=str(path))

    @classmethod
    def from_env(cls, var: str) -> Signer:
        value = os.environ.get(var)
        if not value or not value.strip():
            raise ConfigError(f"environment variable {var} (signing key) is not set or empty")
        # PEM pasted into a one-line secret store often arrives with literal "\n" sequences.
        text = value.strip().replace("\\n", "\n")
        return cls(_parse_private_key(text.encode(), where=f"environment variable {var}"), source=f"${var}")

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_key_raw(self) -> bytes:
        return _raw_public(self._key.public_key())

    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def fingerprint(self) -> str:
        return fingerprint(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"<Signer ed25519 {self.fingerprint()} from {self.source}>"


def fingerprint(public_key: PublicKeyLike) -> str:
    """SHA-256 of the raw 32-byte public key, lowercase hex in colon-separated groups of four."""
    digest = hashlib.sha256(_raw_public(load_public_key(public_key))).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, PEM text/bytes or base64 of the raw 32 bytes."""
    if isinstance(value, Ed25519PublicKey):
        return value
    data = value.encode() if isinstance(value, str) else bytes(value)
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"public key is not valid PEM ({_PUBLIC_FORMATS})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"public key is not an Ed25519 key ({type(key).__name__})")
        return key
    raw = _b64_32(stripped)
    if raw is None:
        raise ConfigError(f"public key is not in a known format ({_PUBLIC_FORMATS})")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key_file(path: Path | str) -> Ed25519PublicKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key file {path}: {exc.strerror}") from exc
    try:
        return load_public_key(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def verify_signature(public_key: PublicKeyLike, data: bytes, sig: bytes) -> bool:
    """True when `sig` is a valid Ed25519 signature of `data` by `public_key`; never raises on a bad sig."""
    key = load_public_key(public_key)
    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def generate_key(path: Path | str) -> Signer:
    """Create a new Ed25519 key, write it as PKCS#8 PEM with mode 0600 and return its Signer.

    Refuses to overwrite an existing file (a lost key cannot be recovered, a replaced one breaks
    verification of every record it signed).
    """
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"signing key file already exists, not overwriting: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create signing key file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return Signer(key, source=str(path))


def _parse_private_key(data: bytes, *, where: str) -> Ed25519PrivateKey:
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        if b"ENCRYPTED" in stripped.split(b"\n", 1)[0]:
            raise ConfigError(f"{where}: encrypted private keys are not supported ({_PRIVATE_FORMATS})")
        try:
            key = serialization.load_pem_private_key(stripped, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # The library's message is dropped on purpose: never risk echoing key material.
            raise ConfigError(f"{where}: not a valid private key ({_PRIVATE_FORMATS})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{where}: not an Ed25519 private key ({type(key).__name__})")
        return key
    raw = _b64_32(stripped)
    if raw is None:
        raise ConfigError(f"{where}: not an Ed25519 private key ({_PRIVATE_FORMATS})")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _b64_32(data: bytes) -> bytes | None:
    try:
        raw = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

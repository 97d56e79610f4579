"""A host's WireGuard key: the private key file (made by `reconciler keygen`) and its public key.

The private key only ever lives in the key file and in the WireGuard device; what we compute, log,
plan or print is its public key, which `wg pubkey` derives (we do no cryptography ourselves).
`public_key_of` is the one way in for other modules (e.g. publishing a host's key in a cluster store).
"""

from __future__ import annotations

import base64
import binascii
import os
import subprocess

from ...errors import ReconcilerError

DEFAULT_KEY_FILE = "/etc/netreconciler/wireguard.key"
KEY_BYTES = 32
WG_TIMEOUT = 10.0  # seconds for one `wg genkey` / `wg pubkey`


class KeyFileError(ReconcilerError):
    """The key file is missing, unreadable or holds no WireGuard private key."""


def valid_public_key(text: str) -> bool:
    """Base64 of 32 bytes, as `wg` writes it (44 characters, one '=')."""
    return _decoded(text) is not None


def _decoded(text: str) -> bytes | None:
    if len(text) != 44:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES else None


def public_key_of(key_file: str) -> str:
    """The public key of the private key in `key_file`; KeyFileError names what is wrong (never the key)."""
    private = _read(key_file)
    return _wg(["pubkey"], private, f"deriving the public key of {key_file}")


def keygen(key_file: str) -> tuple[str, bool]:
    """(public key, whether the file was created): a new private key when the file does not exist."""
    if os.path.exists(key_file):
        return public_key_of(key_file), False
    private = _wg(["genkey"], "", "generating a key")
    parent = os.path.dirname(key_file) or "."
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        # O_EXCL: a file another keygen made meanwhile is kept, not overwritten.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise KeyFileError(f"key file {key_file}: cannot create it: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(private + "\n")
    return public_key_of(key_file), True


def _read(key_file: str) -> str:
    try:
        with open(key_file) as f:
            text = f.read(256).strip()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {key_file} does not exist: create it with `reconciler keygen --key-file {key_file}` "
            "and put the public key it prints in the spec (hosts.NAME.public_key)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not text"
        raise KeyFileError(f"key file {key_file} cannot be read: {reason}") from None
    if _decoded(text) is None:
        raise KeyFileError(
            f"key file {key_file} holds no WireGuard private key (expected the base64 of 32 bytes, "
            "as `wg genkey` writes)"
        )
    return text


def _wg(args: list[str], stdin: str, doing: str) -> str:
    try:
        proc = subprocess.run(
            ["wg", *args], input=stdin, capture_output=True, text=True, timeout=WG_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise KeyFileError(f"{doing}: `wg` (wireguard-tools) is not installed") from None
    except subprocess.TimeoutExpired:
        raise KeyFileError(f"{doing}: `wg {args[0]}` did not answer within {WG_TIMEOUT:g}s") from None
    if proc.returncode != 0:
        raise KeyFileError(f"{doing}: `wg {args[0]}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()

"""Encryption at rest for connector credentials.

Credentials are a flat `{field: value}` mapping serialised as JSON and sealed with Fernet
(AES-128-CBC + HMAC-SHA256, authenticated). The key comes from `<IMPORT_NAME>_SECRET_KEY`
(one key, or several separated by commas: the first encrypts, all decrypt, so keys can be
rotated), or, for the embedded SQLite default, from a key file created next to the database
with owner-only permissions (0600) on first start.

Nothing here logs or formats a credential; errors name the problem, never the value.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialKeyError(RuntimeError):
    """The encryption key is missing, malformed, or cannot decrypt stored credentials."""


def secret_key_env(import_name: str) -> str:
    """Name of the environment variable holding the credential key(s)."""
    return re.sub(r"[^A-Za-z0-9]", "_", import_name).upper() + "_SECRET_KEY"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class CredentialCipher:
    """Seals and opens credential mappings."""

    def __init__(self, keys: list[str], *, source: str | None = None) -> None:
        """`source`: where the keys come from, named in the errors (`key_source`)."""
        where = f" in {source}" if source else ""
        if not keys:
            raise CredentialKeyError(f"no credential encryption key configured{where}")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode("ascii")) for k in keys])
        except (ValueError, TypeError) as exc:
            raise CredentialKeyError(
                f"the credential encryption key{where} is malformed (expected url-safe base64 "
                "of 32 bytes)"
            ) from exc
        self._first = base64.urlsafe_b64decode(keys[0].strip().encode("ascii"))

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose`, derived from the encrypting key (so every process of a
        deployment derives the same one, and it changes when that key is rotated)."""
        return hmac.new(self._first, b"mcpforge/" + purpose.encode("utf-8"), "sha256").digest()

    def encrypt(self, credentials: Mapping[str, str]) -> str:
        data = json.dumps(dict(credentials), sort_keys=True, separators=(",", ":"))
        return self._fernet.encrypt(data.encode("utf-8")).decode("ascii")

    def decrypt(self, sealed: str) -> dict[str, str]:
        try:
            raw = self._fernet.decrypt(sealed.encode("ascii"))
        except (InvalidToken, ValueError) as exc:
            raise CredentialKeyError(
                "stored credentials cannot be decrypted with the configured key"
            ) from exc
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise CredentialKeyError("stored credentials are corrupt")
        return {str(k): str(v) for k, v in cast("dict[object, object]", value).items()}


def read_or_create_key_file(path: Path) -> str:
    """Return the key stored in `path`, creating it (mode 0600) when it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise CredentialKeyError(
                f"key file {path} is readable by other users (mode {mode:o}); chmod 600 it"
            ) from None
        key = path.read_text(encoding="ascii").strip()
        if not key:
            raise CredentialKeyError(f"key file {path} is empty") from None
        return key
    key = generate_key()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key


def key_source(import_name: str, environ: Mapping[str, str], *, key_file: Path | None) -> str:
    """Where `load_cipher` takes the key from, for messages: the environment variable when it
    is set (or when there is no key file), else the key file."""
    env_name = secret_key_env(import_name)
    if environ.get(env_name, "").strip() or key_file is None:
        return env_name
    return f"the key file {key_file}"


def load_cipher(
    import_name: str,
    environ: Mapping[str, str],
    *,
    key_file: Path | None,
) -> CredentialCipher:
    """The cipher for this deployment: the environment key, else the key file.

    `key_file` is None when the store is not an embedded file (PostgreSQL): then the
    environment variable is required.
    """
    env_name = secret_key_env(import_name)
    source = key_source(import_name, environ, key_file=key_file)
    value = environ.get(env_name, "").strip()
    if value:
        return CredentialCipher([k for k in value.split(",") if k.strip()], source=source)
    if key_file is None:
        raise CredentialKeyError(
            f"set {env_name} to a Fernet key (python -c 'from cryptography.fernet import "
            "Fernet; print(Fernet.generate_key().decode())') to store credentials in this database"
        )
    return CredentialCipher([read_or_create_key_file(key_file)], source=source)

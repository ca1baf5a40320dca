"""Webhook signing secrets: generation, and AES-GCM encryption at rest.

A secret is `whsec_` + base64 of 32 random bytes. It is stored sealed (services/common/sealing.py:
AES-256-GCM under a key derived from `PAYMESH_SECRET_ENCRYPTION_KEY`); the endpoint id is the
associated data, so a ciphertext copied onto another endpoint's row does not decrypt.
"""

from __future__ import annotations

import base64
import secrets

from services.common.sealing import Sealer

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
_KDF_INFO = b"paymesh/webhook/endpoint-secret/v1"


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with a key derived from the settings' key."""

    def __init__(self, master_key: str) -> None:
        self._sealer = Sealer(master_key, purpose=_KDF_INFO)

    def encrypt(self, secret: str, *, endpoint_id: str) -> bytes:
        """Nonce followed by the ciphertext and tag."""
        return self._sealer.seal(secret.encode(), bound=endpoint_id.encode())

    def decrypt(self, blob: bytes, *, endpoint_id: str) -> str:
        """The secret; raises `cryptography.exceptions.InvalidTag` on a wrong key or row."""
        return self._sealer.open(blob, bound=endpoint_id.encode()).decode()

    def __repr__(self) -> str:
        return "SecretBox(***)"

"""Webhook signing secrets: generation, and AES-GCM encryption at rest.

A secret is `whsec_` + base64 of 32 random bytes. It is stored encrypted with AES-256-GCM under
a key derived (HKDF-SHA256) from `PAYMESH_SECRET_ENCRYPTION_KEY`; the endpoint id is the
associated data, so a ciphertext copied onto another endpoint's row does not decrypt.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
NONCE_BYTES = 12
_KDF_INFO = b"paymesh/webhook/endpoint-secret/v1"


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with a key derived from the settings' key."""

    def __init__(self, master_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(
            master_key.encode()
        )
        self._aead = AESGCM(derived)

    def encrypt(self, secret: str, *, endpoint_id: str) -> bytes:
        """Nonce followed by the ciphertext and tag."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.encode())

    def decrypt(self, blob: bytes, *, endpoint_id: str) -> str:
        """The secret; raises `cryptography.exceptions.InvalidTag` on a wrong key or row."""
        nonce, ciphertext = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, endpoint_id.encode()).decode()

    def __repr__(self) -> str:
        return "SecretBox(***)"

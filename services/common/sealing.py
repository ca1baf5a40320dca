"""AES-256-GCM sealing under a key derived from a settings secret, bound to associated data.

The key is HKDF-SHA256 of the secret with a `purpose` label, so one secret gives each use its
own key. A sealed blob is the 12-byte nonce followed by the ciphertext and tag; `bound` is the
associated data (e.g. the row's id), so a blob copied onto another row does not open.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class Sealer:
    """Seals and opens bytes with the key derived from `master_key` for `purpose`."""

    def __init__(self, master_key: str, *, purpose: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
            master_key.encode()
        )
        self._aead = AESGCM(derived)

    def seal(self, data: bytes, *, bound: bytes) -> bytes:
        """Nonce followed by the ciphertext and tag."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, bound)

    def open(self, blob: bytes, *, bound: bytes) -> bytes:
        """The data; raises `cryptography.exceptions.InvalidTag` on a wrong key or binding."""
        return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], bound)

    def __repr__(self) -> str:
        return "Sealer(***)"

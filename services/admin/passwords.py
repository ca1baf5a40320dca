"""Passwords of operators and merchant users: argon2id hashes, checked in constant time."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

LENGTH_MIN = 8
# argon2 reads the whole password; a megabyte of it would be a cheap way to burn CPU.
LENGTH_MAX = 1024
_hasher = PasswordHasher()
# Checked against when there is no account, so a sign-in takes as long either way.
_DUMMY_HASH = _hasher.hash("paymesh-no-such-account")


def problem(password: str) -> str | None:
    """Why the password is unacceptable, or None."""
    if len(password) < LENGTH_MIN:
        return f"must be at least {LENGTH_MIN} long"
    if len(password) > LENGTH_MAX:
        return f"must be at most {LENGTH_MAX} long"
    return None


def hash_password(password: str) -> str:
    """The stored form of a password."""
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; spends the same time when there is no hash (no account)."""
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None

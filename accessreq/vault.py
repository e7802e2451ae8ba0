"""Passwords waiting for their one reveal, encrypted with keys from the environment (never SECRET_KEY)."""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def seal(plaintext: str) -> bytes:
    return _fernet(tuple(settings.PASSWORD_ENCRYPTION_KEYS)).encrypt(plaintext.encode())


def unseal(ciphertext: bytes) -> str:
    return _fernet(tuple(settings.PASSWORD_ENCRYPTION_KEYS)).decrypt(bytes(ciphertext)).decode()

"""Deterministic, seekable pseudo-random content for emulated backup archives.

A file's bytes are a pure function of ``(seed, offset)``, so the emulator can serve any range of a
multi-GiB archive without storing it, and tests can recompute the expected bytes or digest on their
own. Content is built from one 1 MiB random block per seed; 1 MiB chunk ``j`` is that block rotated
by a chunk-dependent amount, so chunks differ from each other (a client that duplicates, drops or
reorders chunks produces a different digest) while serving stays a zero-copy slice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from random import Random

__all__ = [
    "BLOCK_SIZE",
    "content_range",
    "iter_content",
    "sha256_hex",
    "sha256_range",
]

BLOCK_SIZE = 1 << 20
"""Size of the random block (and of one content chunk)."""

_GOLDEN = 0x9E3779B1  # odd, so rotations of different chunks only repeat every 2**20 chunks (1 TiB)


@lru_cache(maxsize=16)
def _doubled_block(seed: int) -> bytes:
    """The seed's random block twice over, so any rotation is one contiguous slice."""
    block = Random(seed).randbytes(BLOCK_SIZE)
    return block + block


def _rotation(seed: int, chunk: int) -> int:
    return (chunk * _GOLDEN + (seed * 0x85EBCA77 & 0xFFFFFFFF)) % BLOCK_SIZE


def iter_content(seed: int, start: int, length: int, chunk: int = BLOCK_SIZE) -> Iterator[memoryview]:
    """Yield the bytes of ``[start, start + length)`` as read-only views of at most ``chunk`` bytes.

    Views point into a cached block, so streaming costs no allocation per chunk.
    """
    if start < 0 or length < 0:
        raise ValueError("start and length must be non-negative")
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    view = memoryview(_doubled_block(seed))
    pos, end = start, start + length
    while pos < end:
        index, within = divmod(pos, BLOCK_SIZE)
        take = min(end - pos, BLOCK_SIZE - within, chunk)
        base = _rotation(seed, index) + within
        yield view[base : base + take]
        pos += take


def content_range(seed: int, start: int, length: int) -> bytes:
    """The bytes of ``[start, start + length)`` of the content for ``seed``."""
    return b"".join(iter_content(seed, start, length))


def sha256_range(seed: int, start: int, length: int) -> str:
    """Hex SHA-256 of ``[start, start + length)``, computed in constant memory."""
    digest = hashlib.sha256()
    for piece in iter_content(seed, start, length):
        digest.update(piece)
    return digest.hexdigest()


def sha256_hex(seed: int, size: int) -> str:
    """Hex SHA-256 of the first ``size`` bytes: the digest of a whole archive of that size."""
    return sha256_range(seed, 0, size)

"""The archive's SHA-256 and CRC32, and the checksums S3 computes and reports."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

_CRC32_POLY = 0xEDB88320  # the reflected CRC-32 polynomial (zlib's, S3's ChecksumCRC32)


class ArchiveDigest:
    """SHA-256 and CRC32 of an archive, fed in order (the same bytes a reader gets back)."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._crc = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview, crc32: str | None = None) -> None:
        """Add the next bytes; ``crc32`` (base64, as sent to S3) is their CRC-32 when already known,
        which saves a second CRC pass over them."""
        self._sha256.update(data)
        if crc32 is None:
            self._crc = zlib.crc32(data, self._crc)
        else:
            self._crc = crc32_combine(self._crc, int.from_bytes(base64.b64decode(crc32), "big"), len(data))
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def crc32(self) -> str:
        """Base64 of the big-endian CRC-32, as S3's ``ChecksumCRC32``."""
        return base64.b64encode(self._crc.to_bytes(4, "big")).decode("ascii")


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, matrix[n]) for n in range(32))


@functools.lru_cache(maxsize=8)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC-32 register over ``length`` zero bytes (zlib's method)."""
    result = tuple(1 << n for n in range(32))  # identity
    power = _gf2_square(_gf2_square(_gf2_square((_CRC32_POLY, *(1 << n for n in range(31))))))  # 1 byte
    while length:
        if length & 1:
            result = tuple(_gf2_times(power, column) for column in result)
        length >>= 1
        if length:
            power = _gf2_square(power)
    return result


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A+B from crc(A), crc(B) and len(B), without reading the bytes again."""
    return _gf2_times(_zeros_operator(length2), crc1) ^ crc2 if length2 else crc1


def stored_checksum(head: Mapping[str, Any]) -> str | None:
    """What a HeadObject with ``ChecksumMode=ENABLED`` says S3 stored: "CRC32 <value> <type>".

    The type is the one S3 states (``FULL_OBJECT`` or ``COMPOSITE``); a composite value without a
    stated type shows by its "-N"; anything else is ``UNTYPED`` and is not taken for a whole-object
    checksum (older stores answer with a value of unknown meaning).
    """
    for algorithm in ("CRC64NVME", "CRC32", "CRC32C", "SHA256", "SHA1"):
        value = head.get(f"Checksum{algorithm}")
        if value:
            kind = head.get("ChecksumType") or ("COMPOSITE" if "-" in str(value) else "UNTYPED")
            return f"{algorithm} {value} {kind}"
    return None


def _md5_b64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _crc32(data: bytes | bytearray) -> str:
    """S3's ChecksumCRC32: base64 of the big-endian CRC-32."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def _composite_crc32(part_checksums: Sequence[str]) -> str:
    """S3's checksum of a multipart object: the CRC-32 of the parts' CRC-32s, then ``-N``."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{_crc32(joined)}-{len(part_checksums)}"


def _multipart_etag(part_etags: Sequence[str]) -> str | None:
    """S3's ETag of a multipart object (MD5 of the parts' MD5s, then ``-N``), or None when a part's
    ETag is not an MD5 (some encryption modes, some stores) and so cannot be combined."""
    digests = [etag.strip('"') for etag in part_etags]
    if not all(re.fullmatch(r"[0-9a-fA-F]{32}", d) for d in digests):
        return None
    combined = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests), usedforsecurity=False)
    return f"{combined.hexdigest()}-{len(digests)}"

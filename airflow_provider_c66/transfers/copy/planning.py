"""Cutting an archive (the sources concatenated in order) into S3 parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider_c66.transfers.copy.model import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
)


def choose_part_size(total: int, requested: int) -> int:
    """The part size for ``total`` bytes: at least ``requested``, few enough parts for S3, whole MiB."""
    if total < 0 or requested <= 0:
        raise ValueError("total must be non-negative and requested positive")
    if total > MAX_OBJECT_SIZE:
        raise ValueError(f"{total} bytes is more than S3's 5 TiB object limit")
    size = max(requested, MIN_PART_SIZE, -(-total // MAX_PARTS))
    return min(-(-size // MiB) * MiB, MAX_PART_SIZE)


@dataclass(frozen=True)
class _Segment:
    """The bytes of one source that fall into one part."""

    source: int
    offset: int
    length: int


@dataclass(frozen=True)
class _Part:
    """One S3 part: ``length`` bytes of the archive from ``start``; it may span two or more sources."""

    number: int
    start: int
    length: int
    segments: tuple[_Segment, ...]

    def describe(self) -> str:
        return f"part {self.number}, archive bytes {self.start}-{self.start + self.length - 1}"


def _plan_parts(sizes: Sequence[int], part_size: int) -> list[_Part]:
    """Cut the concatenated sources into parts; an empty archive is one empty part."""
    parts: list[_Part] = []
    segments: list[_Segment] = []
    start = filled = 0
    for index, size in enumerate(sizes):
        offset = 0
        while offset < size:
            take = min(size - offset, part_size - filled)
            segments.append(_Segment(index, offset, take))
            offset, filled = offset + take, filled + take
            if filled == part_size:
                parts.append(_Part(len(parts) + 1, start, filled, tuple(segments)))
                segments, start, filled = [], start + filled, 0
    if filled or not parts:
        parts.append(_Part(len(parts) + 1, start, filled, tuple(segments)))
    return parts

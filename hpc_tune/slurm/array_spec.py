"""``--array`` specs: parsed once at the edge, so that a bad spec fails before anything reaches sbatch, and
split at the cluster's MaxArraySize (which limits the largest INDEX, not the count of tasks)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hpc_tune.errors import SlurmError

# SLURM's default MaxArraySize; the largest allowed INDEX is one less (0-1000 passes, 0-1001 fails).
DEFAULT_MAX_ARRAY_SIZE = 1001
# SLURM refuses MaxArraySize above 4000001: an index beyond that is a typo, and refusing it early keeps
# ``indices`` from allocating billions of ints.
_MAX_INDEX = 4_000_000
# ASCII digits only: \d would accept other scripts' digits, which int() reads and SLURM does not.
_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")
_UINT_RE = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class ArraySpec:
    """A ``--array`` value, parsed once so that bad specs fail before anything reaches sbatch.

    ``ranges`` keeps the user's own ``(first, last, step)`` triples so ``str()`` gives back what they wrote.
    """

    ranges: tuple[tuple[int, int, int], ...]
    parallelism: int | None = None

    @classmethod
    def parse(cls, text: str) -> ArraySpec:
        raw = text.strip() if isinstance(text, str) else ""
        if not raw:
            raise SlurmError("empty --array spec (expected e.g. 0-31%8, 1,3,5 or 0-15:2)")
        body, pct, limit = raw.partition("%")
        parallelism: int | None = None
        if pct:
            if not _UINT_RE.match(limit) or int(limit) < 1:
                raise SlurmError(f"invalid --array spec {raw!r}: the %N limit must be a whole number >= 1")
            parallelism = int(limit)
        if not body:
            raise SlurmError(f"invalid --array spec {raw!r}: no indices before %")
        ranges = []
        for part in body.split(","):
            match = _RANGE_RE.match(part)
            if match is None:
                raise SlurmError(
                    f"invalid --array spec {raw!r}: {part!r} is not N, N-M or N-M:S with whole numbers >= 0"
                )
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            step = int(match.group(3)) if match.group(3) is not None else 1
            if last < first:
                raise SlurmError(f"invalid --array spec {raw!r}: range {part!r} ends before it starts")
            if step < 1:
                raise SlurmError(f"invalid --array spec {raw!r}: step in {part!r} must be >= 1")
            if last > _MAX_INDEX:
                raise SlurmError(
                    f"invalid --array spec {raw!r}: index {last} is above SLURM's limit {_MAX_INDEX}"
                )
            ranges.append((first, last, step))
        return cls(tuple(ranges), parallelism)

    @classmethod
    def from_indices(cls, indices: Iterable[int], parallelism: int | None = None) -> ArraySpec:
        """The shortest spec for a set of indices (runs with a common step become ``a-b:s``)."""
        values = sorted(set(indices))
        if not values:
            raise SlurmError("an array needs at least one index")
        if values[0] < 0:
            raise SlurmError(f"array index {values[0]} is negative")
        ranges: list[tuple[int, int, int]] = []
        i = 0
        while i < len(values):
            j = i
            if i + 1 < len(values):
                step = values[i + 1] - values[i]
                while j + 1 < len(values) and values[j + 1] - values[j] == step:
                    j += 1
                # Two values as a:b:s read worse than "a,b"; three or more (or any consecutive run) compress.
                if j - i >= 2 or (j - i == 1 and step == 1):
                    ranges.append((values[i], values[j], step))
                    i = j + 1
                    continue
            ranges.append((values[i], values[i], 1))
            i += 1
        return cls(tuple(ranges), parallelism)

    def __str__(self) -> str:
        parts = []
        for first, last, step in self.ranges:
            if first == last:
                parts.append(str(first))
            elif step == 1:
                parts.append(f"{first}-{last}")
            else:
                parts.append(f"{first}-{last}:{step}")
        text = ",".join(parts)
        return f"{text}%{self.parallelism}" if self.parallelism is not None else text

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(sorted({i for first, last, step in self.ranges for i in range(first, last + 1, step)}))

    @property
    def max_index(self) -> int:
        return max(first + (last - first) // step * step for first, last, step in self.ranges)

    @property
    def count(self) -> int:
        return len(self.indices)

    def with_parallelism(self, parallelism: int | None) -> ArraySpec:
        if parallelism is not None and parallelism < 1:
            raise SlurmError(f"array parallelism must be >= 1, got {parallelism}")
        return ArraySpec(self.ranges, parallelism)

    def split(self, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> list[ArrayChunk]:
        """Arrays that SLURM accepts, each with the offset its tasks add to SLURM_ARRAY_TASK_ID.

        MaxArraySize bounds the largest index, not the count, so a request fits when ``max_index`` does;
        otherwise indices are cut into windows of ``max_array_size`` and shifted down by the window's start.
        """
        if max_array_size < 1:
            raise SlurmError(f"MaxArraySize must be >= 1, got {max_array_size}")
        if self.max_index < max_array_size:
            return [ArrayChunk(self, 0)]
        windows: dict[int, list[int]] = {}
        for index in self.indices:
            offset = index // max_array_size * max_array_size
            windows.setdefault(offset, []).append(index - offset)
        return [
            ArrayChunk(ArraySpec.from_indices(local, self.parallelism), offset)
            for offset, local in sorted(windows.items())
        ]


@dataclass(frozen=True)
class ArrayChunk:
    """One sbatch-able array: its tasks' global index is ``offset + SLURM_ARRAY_TASK_ID``."""

    spec: ArraySpec
    offset: int

    @property
    def global_indices(self) -> tuple[int, ...]:
        return tuple(self.offset + i for i in self.spec.indices)

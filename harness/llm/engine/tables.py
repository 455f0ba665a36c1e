"""Step inputs on the device: one staged host-to-device copy per forward pass, and block tables
kept as a device tensor that is updated in place rather than rebuilt every step.

`Staging` collects a step's host values (token ids, positions, slots, context lengths, table
rows, table updates, sampling parameters, uniforms) in one int64 buffer that is reused across
steps (floats travel as the bit patterns of float64s), and copies it once; the runner reads
views of the device copy. On a CPU the buffer is the device copy.

`BlockTables` gives every live sequence a row of a `[rows, max blocks]` tensor. Each step it
compares a scheduled sequence's block table with the copy it last wrote (a C-level list
compare) and stages only the entries that changed: appended blocks, or the whole row after a
rollback or a re-admission.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence as Seq

import torch

from harness.llm.engine.sequence import Sequence


class Staged:
    """Device views of one send: `ints(i)` / `floats(i)` of segment i."""

    def __init__(self, buf: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
        self._buf = buf
        self._bounds = bounds

    def ints(self, i: int) -> torch.Tensor:
        a, b = self._bounds[i]
        return self._buf[a:b]

    def floats(self, i: int) -> torch.Tensor:
        """float32 values of a segment queued with `add_floats`."""
        a, b = self._bounds[i]
        return self._buf[a:b].view(torch.float64).float()


def float_bits(values: Seq[float]) -> list[int]:
    """float64 values as the int64s with the same bits (so they ride in the int buffer)."""
    n = len(values)
    return list(struct.unpack(f"{n}q", struct.pack(f"{n}d", *values)))


class Staging:
    """Host values of one step, sent to the device in a single copy."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._host = torch.empty(0, dtype=torch.long)
        self._dev = self._host
        self._parts: list[Seq[int]] = []
        self._copied: torch.cuda.Event | None = None

    def add(self, values: Seq[int]) -> int:
        """Queue a segment of ints; returns its index for the `Staged` views."""
        self._parts.append(values)
        return len(self._parts) - 1

    def add_floats(self, values: Seq[float]) -> int:
        return self.add(float_bits(values))

    def send(self) -> Staged:
        bounds: list[tuple[int, int]] = []
        flat: list[int] = []
        for part in self._parts:
            bounds.append((len(flat), len(flat) + len(part)))
            flat += part
        self._parts = []
        n = len(flat)
        if n > self._host.numel():
            size = max(n, 2 * self._host.numel(), 1024)
            self._host = torch.empty(size, dtype=torch.long, pin_memory=self._cuda)
            self._dev = (
                torch.empty(size, dtype=torch.long, device=self.device)
                if self._cuda
                else self._host
            )
        if self._copied is not None:  # the last asynchronous copy still reads the buffer
            self._copied.synchronize()
        self._host.numpy()[:n] = flat
        if self._cuda:
            self._dev[:n].copy_(self._host[:n], non_blocking=True)
            self._copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._copied.record()
        return Staged(self._dev[:n], bounds)


class BlockTables:
    """Device block tables of live sequences, one row each, updated incrementally."""

    def __init__(self, width: int, null_block: int, device: torch.device, rows: int = 64) -> None:
        self.width = width
        self.null_block = null_block
        self.device = device
        self.tensor = torch.full((rows + 1, width), null_block, dtype=torch.long, device=device)
        self.null_row = rows  # all scratch: padding rows of a batch use it
        self._rows: dict[int, int] = {}  # seq id -> row
        self._written: dict[int, list[int]] = {}  # row -> table as last written
        self._free = list(range(rows - 1, -1, -1))
        self._updates: list[int] = []  # flat index, value, flat index, value, ...

    def row(self, seq: Sequence) -> int:
        """The sequence's row, with its current block table queued for writing if it changed."""
        r = self._rows.get(seq.seq_id)
        if r is None:
            if not self._free:
                self._grow()
            r = self._free.pop()
            self._rows[seq.seq_id] = r
            self._written[r] = []
        table, old = seq.block_table, self._written[r]
        if table == old:
            return r
        n = len(old)
        start = n if n <= len(table) and table[:n] == old else 0
        if len(table) > self.width:
            raise ValueError(f"block table of {len(table)} blocks > {self.width}")
        base = r * self.width
        ups = self._updates
        for j in range(start, len(table)):
            ups += (base + j, table[j])
        self._written[r] = list(table)
        return r

    def stage(self, staging: Staging) -> int | None:
        """Queue this step's updates (call after every `row()` of the step)."""
        if not self._updates:
            return None
        ups, self._updates = self._updates, []
        return staging.add(ups)

    def apply(self, staged: Staged, seg: int | None) -> None:
        if seg is None:
            return
        ups = staged.ints(seg).view(-1, 2)
        self.tensor.view(-1).index_copy_(0, ups[:, 0], ups[:, 1])

    def gather(self, rows: torch.Tensor, width: int) -> torch.Tensor:
        """[len(rows), width] block ids of the given rows (the null row pads a batch)."""
        return self.tensor.index_select(0, rows)[:, :width]

    def release(self, seq_id: int) -> None:
        r = self._rows.pop(seq_id, None)
        if r is not None:
            del self._written[r]
            self._free.append(r)

    def _grow(self) -> None:
        old_rows = self.null_row
        rows = 2 * old_rows
        grown = torch.full(
            (rows + 1, self.width), self.null_block, dtype=torch.long, device=self.device
        )
        grown[:old_rows] = self.tensor[:old_rows]
        self.tensor = grown
        self.null_row = rows
        self._free = list(range(rows - 1, old_rows - 1, -1))

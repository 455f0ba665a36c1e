"""Paged KV block manager (pure Python): ref counts, a hash-chained prefix cache, a CPU tier.

A block is `block_size` token slots in the runner's KV tensor. Full, computed blocks are
named by a chain hash (parent hash + the block's tokens), so equal prefixes share blocks.
Unreferenced hashed blocks stay cached in LRU order until their slot is needed; blocks freed
with `offload=True` are copied to the CPU tier when evicted, instead of being lost.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Literal

NO_PARENT = -1


def chain_hash(parent: int, tokens: tuple[int, ...]) -> int:
    """Hash of a block given its parent's hash; tuples of ints hash the same in every process."""
    return hash((parent, tokens))


def block_tokens(token_ids: Seq[int], block_size: int, index: int) -> tuple[int, ...]:
    return tuple(token_ids[index * block_size : (index + 1) * block_size])


def prefix_hashes(token_ids: Seq[int], block_size: int, num_tokens: int) -> list[int]:
    """Chain hashes of the full blocks inside the first `num_tokens` tokens."""
    out: list[int] = []
    parent = NO_PARENT
    for i in range(num_tokens // block_size):
        parent = chain_hash(parent, block_tokens(token_ids, block_size, i))
        out.append(parent)
    return out


@dataclass(frozen=True)
class CopyOp:
    """A block copy for the runner, run in order before the step's forward pass."""

    direction: Literal["out", "in"]  # out: device -> CPU tier, in: CPU tier -> device
    gpu: int
    cpu: int


@dataclass(frozen=True)
class Hit:
    """One block of a prefix found in the cache, on the device or in the CPU tier."""

    where: Literal["gpu", "cpu"]
    block: int


class BlockManager:
    """Owns block ids 0..num_blocks-1 and the CPU tier's ids; knows nothing about tensors."""

    def __init__(
        self, num_blocks: int, block_size: int, *, caching: bool = True, num_cpu_blocks: int = 0
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = caching
        self.ref = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._tokens_of: list[tuple[int, ...] | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        self._empty: deque[int] = deque(range(num_blocks))
        self._cached: OrderedDict[int, None] = OrderedDict()  # ref 0 and hashed, LRU first
        self._offload_marked: set[int] = set()
        self.num_cpu_blocks = num_cpu_blocks
        self._cpu_by_hash: dict[int, int] = {}
        self._cpu_hash_of: list[int | None] = [None] * num_cpu_blocks
        self._cpu_tokens_of: list[tuple[int, ...] | None] = [None] * num_cpu_blocks
        self._cpu_lru: OrderedDict[int, None] = OrderedDict()
        self._cpu_empty: deque[int] = deque(range(num_cpu_blocks))
        self._ops: list[CopyOp] = []
        self.evictions = 0
        self.offloaded = 0
        self.restored = 0

    # -- capacity ---------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks an allocation may take: empty ones plus unreferenced cached ones."""
        return len(self._empty) + len(self._cached)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def is_cached_free(self, block: int) -> bool:
        return block in self._cached

    # -- prefix cache -----------------------------------------------------------------------
    def lookup(self, hashes: Seq[int], tokens: Seq[tuple[int, ...]]) -> list[Hit]:
        """The longest run of leading blocks present on the device or in the CPU tier."""
        hits: list[Hit] = []
        if not self.caching:
            return hits
        for h, toks in zip(hashes, tokens, strict=True):
            b = self._by_hash.get(h)
            if b is not None and self._tokens_of[b] == toks:
                hits.append(Hit("gpu", b))
                continue
            c = self._cpu_by_hash.get(h)
            if c is not None and self._cpu_tokens_of[c] == toks:
                hits.append(Hit("cpu", c))
                continue
            break
        return hits

    def take(self, hits: Seq[Hit]) -> list[int]:
        """Reference the hit blocks; CPU hits get a fresh device block and a copy-in op.

        Device hits are referenced first, so allocating for a CPU hit can never evict a
        device hit further down the same chain.
        """
        out: list[int] = [-1] * len(hits)
        for i, hit in enumerate(hits):
            if hit.where == "gpu":
                self.share(hit.block)
                out[i] = hit.block
        for i, hit in enumerate(hits):
            if hit.where == "cpu":
                c = hit.block
                h, toks = self._cpu_hash_of[c], self._cpu_tokens_of[c]
                b = self._pop_free()
                self._ops.append(CopyOp("in", b, c))
                self._cpu_lru.move_to_end(c)
                self.restored += 1
                if h is not None and toks is not None:
                    self.register(b, h, toks)
                out[i] = b
        return out

    def share(self, block: int) -> None:
        """One more reference to a block (a cached one leaves the LRU pool)."""
        if self.ref[block] == 0:
            self._cached.pop(block, None)
            self._offload_marked.discard(block)
        self.ref[block] += 1

    def register(self, block: int, h: int, toks: tuple[int, ...]) -> None:
        """Name a full, computed block by its chain hash (first writer wins on duplicates)."""
        if not self.caching or self._hash_of[block] is not None or h in self._by_hash:
            return
        self._by_hash[h] = block
        self._hash_of[block] = h
        self._tokens_of[block] = toks

    # -- allocation -------------------------------------------------------------------------
    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} KV blocks with {self.num_free} free")
        return [self._pop_free() for _ in range(n)]

    def free(self, blocks: Seq[int], *, offload: bool = False) -> None:
        """Drop one reference from each block; the tail goes first so prefixes outlive it."""
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] < 0:
                raise RuntimeError(f"KV block {b} freed twice")
            if self.ref[b] == 0:
                if self._hash_of[b] is not None:
                    self._cached[b] = None
                    if offload and self.num_cpu_blocks:
                        self._offload_marked.add(b)
                else:
                    self._empty.append(b)

    def drain_ops(self) -> list[CopyOp]:
        ops, self._ops = self._ops, []
        return ops

    def _pop_free(self) -> int:
        if self._empty:
            b = self._empty.popleft()
        else:
            b, _ = self._cached.popitem(last=False)
            self._evict(b)
        self.ref[b] = 1
        return b

    def _evict(self, b: int) -> None:
        h, toks = self._hash_of[b], self._tokens_of[b]
        if h is not None:
            del self._by_hash[h]
            if b in self._offload_marked and toks is not None:
                self._offload(b, h, toks)
        self._offload_marked.discard(b)
        self._hash_of[b] = None
        self._tokens_of[b] = None
        self.evictions += 1

    def _offload(self, b: int, h: int, toks: tuple[int, ...]) -> None:
        if h in self._cpu_by_hash:
            self._cpu_lru.move_to_end(self._cpu_by_hash[h])
            return
        if self._cpu_empty:
            c = self._cpu_empty.popleft()
        else:
            c, _ = self._cpu_lru.popitem(last=False)
            old = self._cpu_hash_of[c]
            if old is not None:
                del self._cpu_by_hash[old]
        self._cpu_by_hash[h] = c
        self._cpu_hash_of[c] = h
        self._cpu_tokens_of[c] = toks
        self._cpu_lru[c] = None
        self._ops.append(CopyOp("out", b, c))
        self.offloaded += 1

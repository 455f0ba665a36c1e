"""Block manager: ref counts, hash-chained prefix cache, LRU eviction, CPU tier (pure Python)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.llm.engine.kv import BlockManager, Hit, block_tokens, prefix_hashes


def _register_all(bm: BlockManager, blocks: list[int], tokens: list[int]) -> list[int]:
    hashes = prefix_hashes(tokens, bm.block_size, len(tokens))
    for i, h in enumerate(hashes):
        bm.register(blocks[i], h, block_tokens(tokens, bm.block_size, i))
    return hashes


def test_hashes_chain_on_the_whole_prefix() -> None:
    a = prefix_hashes([1, 2, 3, 4, 5, 6, 7, 8], 4, 8)
    b = prefix_hashes([9, 2, 3, 4, 5, 6, 7, 8], 4, 8)
    assert len(a) == 2 and a[0] != b[0] and a[1] != b[1]  # same 2nd block, other parent
    assert prefix_hashes([1, 2, 3, 4, 5, 6, 7], 4, 7) == a[:1]  # partial blocks are not named


def test_freed_blocks_stay_cached_until_needed() -> None:
    bm = BlockManager(4, 2)
    toks = [1, 2, 3, 4]
    blocks = bm.allocate(2)
    hashes = _register_all(bm, blocks, toks)
    bm.free(blocks)
    assert bm.num_free == 4
    hits = bm.lookup(hashes, [block_tokens(toks, 2, i) for i in range(2)])
    assert [h.block for h in hits] == blocks
    assert bm.take(hits) == blocks and bm.num_free == 2


def test_lru_evicts_the_tail_of_the_oldest_first() -> None:
    bm = BlockManager(4, 1)
    a = bm.allocate(2)
    _register_all(bm, a, [1, 2])
    b = bm.allocate(2)
    _register_all(bm, b, [3, 4])
    bm.free(a)
    bm.free(b)
    # a's tail, then a's head, then b's tail
    assert bm.allocate(1) == [a[1]]
    assert bm.allocate(1) == [a[0]]
    hits = bm.lookup(prefix_hashes([3, 4], 1, 2), [(3,), (4,)])
    assert hits == [Hit("gpu", b[0]), Hit("gpu", b[1])]


def test_no_caching_means_no_hits() -> None:
    bm = BlockManager(4, 2, caching=False)
    blocks = bm.allocate(1)
    hashes = _register_all(bm, blocks, [1, 2])
    bm.free(blocks)
    assert bm.lookup(hashes, [(1, 2)]) == []


def test_offloaded_blocks_come_back_through_copy_ops() -> None:
    bm = BlockManager(2, 2, num_cpu_blocks=2)
    toks = [5, 6, 7, 8]
    blocks = bm.allocate(2)
    hashes = _register_all(bm, blocks, toks)
    bm.free(blocks, offload=True)
    other = bm.allocate(2)  # evicts both; they go to the CPU tier
    ops = bm.drain_ops()
    assert [op.direction for op in ops] == ["out", "out"]
    bm.free(other)
    hits = bm.lookup(hashes, [(5, 6), (7, 8)])
    assert [h.where for h in hits] == ["cpu", "cpu"]
    got = bm.take(hits)
    ins = bm.drain_ops()
    assert [(op.direction, op.gpu) for op in ins] == [("in", got[0]), ("in", got[1])]
    assert bm.lookup(hashes, [(5, 6), (7, 8)])[0].where == "gpu"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["alloc", "free", "share"]), st.integers(1, 3)), max_size=40)
)
def test_ref_counts_and_free_count_stay_consistent(ops: list[tuple[str, int]]) -> None:
    bm = BlockManager(8, 2)
    held: list[list[int]] = []
    for op, n in ops:
        if op == "alloc" and bm.num_free >= n:
            held.append(bm.allocate(n))
        elif op == "free" and held:
            bm.free(held.pop(n % len(held)))
        elif op == "share" and held:
            blocks = held[n % len(held)]
            for b in blocks:
                bm.ref[b] += 1
            held.append(list(blocks))
        expected = [0] * 8
        for blocks in held:
            for b in blocks:
                expected[b] += 1
        assert bm.ref == expected
        assert bm.num_free == sum(1 for r in expected if r == 0)


def test_a_cpu_hit_never_evicts_a_device_hit_of_the_same_chain() -> None:
    bm = BlockManager(3, 1, num_cpu_blocks=4)
    hashes = prefix_hashes([1, 2], 1, 2)
    a = bm.allocate(2)
    _register_all(bm, a, [1, 2])
    bm.free(a, offload=True)
    bm.share(a[1])  # touch token 2's block: LRU order is now [token 1, token 2]
    bm.free([a[1]], offload=True)
    x = bm.allocate(1)
    bm.register(x[0], 12345, (9,))
    bm.free(x)  # LRU: [token 1, token 2, x]
    bm.allocate(1)  # evicts token 1 to the CPU tier; LRU: [token 2, x]
    hits = bm.lookup(hashes, [(1,), (2,)])
    assert [h.where for h in hits] == ["cpu", "gpu"]
    got = bm.take(hits)  # the copy-in must take x, not token 2's block
    assert got[1] == a[1] and got[0] == x[0] and bm.ref[a[1]] == 1

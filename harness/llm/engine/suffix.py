"""Model-free drafts for token-level speculation (pure Python, no torch).

A sequence's draft is what followed the longest earlier occurrence of its last tokens, searched
in its own prompt and output (prompt lookup) and in the earlier turns of its program (suffix
matching over the program's history; SuffixDecoding's idea without a model). Agent turns are
predictable this way: edits copy lines of the files in the prompt, reruns repeat earlier output,
and a small model's loops repeat themselves.

Each document (a token list) keeps hash chains over its `ANCHOR`-token n-grams, as zlib's match
finder does: `head[h]` is the latest end position of an n-gram hashing to `h`, `prev[i]` the
one before position `i` with the same hash. A lookup walks at most `CHAIN` candidates per
document, measures how far each agrees with the sequence's tail going backwards (slice compares,
capped at `MAX_MATCH`), and keeps the longest, the most recent on ties, the sequence's own text
first. Without a 3-token match, the last occurrence of the last two tokens, then of the last
token, in the sequence itself. A match of `m` tokens proposes at most `ceil(SCALE * m)` tokens:
longer matches predict further (SuffixDecoding's adaptive speculation length); the policy's
`k` (from the row's acceptance rate) caps it too.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from harness.llm.engine.config import SpecConfig
from harness.llm.engine.sequence import Sequence
from harness.llm.engine.spec_policy import TokenPolicy

ANCHOR = 3  # tokens hashed per chain entry
CHAIN = 8  # candidates examined per document and lookup
MAX_MATCH = 64  # backward comparison stops here
SCALE = 2.0  # a match of m tokens proposes at most ceil(SCALE * m) tokens
HISTORY_TOKENS = 262_144  # tokens of finished turns kept over all programs (LRU by program)
DOCS_PER_PROGRAM = 4


class DocIndex:
    """Hash chains over one growing token list (shared, never copied; only ever appended to).

    Position `i` enters the index once `tokens[i + 1]` exists: every indexed match has a
    continuation, and a lookup of the list's own tail never finds the tail itself.
    """

    __slots__ = ("head", "indexed", "last1", "last2", "prev", "tokens")

    def __init__(self, tokens: list[int], *, short: bool = False) -> None:
        self.tokens = tokens
        self.indexed = 0  # positions [0, indexed) are in the chains
        self.head: dict[int, int] = {}
        self.prev = array("i")
        # The sequence's own document also remembers the last place of each 1- and 2-gram.
        self.last1: dict[int, int] | None = {} if short else None
        self.last2: dict[tuple[int, int], int] | None = {} if short else None

    def __len__(self) -> int:
        return len(self.tokens)

    def sync(self) -> None:
        toks, head, prev = self.tokens, self.head, self.prev
        end = len(toks) - 1
        i = self.indexed
        if i >= end:
            return
        last1, last2 = self.last1, self.last2
        while i < end:
            if i >= ANCHOR - 1:
                h = hash((toks[i - 2], toks[i - 1], toks[i]))
                prev.append(head.get(h, -1))
                head[h] = i
            else:
                prev.append(-1)
            if last1 is not None and last2 is not None:
                last1[toks[i]] = i
                if i:
                    last2[(toks[i - 1], toks[i])] = i
            i += 1
        self.indexed = i

    def best(self, tail: list[int], end: int, found: int) -> tuple[int, int]:
        """(match length, end position here) of the longest match of `tail[..end]` longer than
        `found` tokens, or (0, -1)."""
        if end < ANCHOR - 1:
            return 0, -1
        toks = self.tokens
        key = (tail[end - 2], tail[end - 1], tail[end])
        p = self.head.get(hash(key), -1)
        best_m, best_p = 0, -1
        for _ in range(CHAIN):
            if p < 0:
                break
            if (toks[p - 2], toks[p - 1], toks[p]) == key:  # a hash collision otherwise
                m = _extend(tail, end, toks, p)
                if m > best_m and m > found:
                    best_m, best_p = m, p
                    if m >= MAX_MATCH:
                        break
            p = self.prev[p]
        return best_m, best_p


def _extend(a: list[int], ea: int, b: list[int], eb: int) -> int:
    """How many tokens `a[..ea]` and `b[..eb]` agree on going backwards (>= ANCHOR, known),
    capped at MAX_MATCH: galloping, then bisection, over C-level slice compares."""
    cap = min(MAX_MATCH, ea + 1, eb + 1)
    lo = ANCHOR  # known to agree
    step = 2 * ANCHOR
    while step < cap and a[ea - step + 1 : ea + 1] == b[eb - step + 1 : eb + 1]:
        lo, step = step, 2 * step
    hi = min(step, cap)  # may or may not agree
    if a[ea - hi + 1 : ea + 1] == b[eb - hi + 1 : eb + 1]:
        return hi
    while hi - lo > 1:  # agree at lo, disagree at hi
        mid = (lo + hi) // 2
        if a[ea - mid + 1 : ea + 1] == b[eb - mid + 1 : eb + 1]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class _Live:
    doc: DocIndex
    program: str | None
    last_turn: bool
    version: int = -1  # program history version `others` was taken at
    others: list[DocIndex] = field(default_factory=list)


@dataclass
class _History:
    docs: list[DocIndex] = field(default_factory=list)  # newest first
    version: int = 0


class SuffixDrafter:
    """Proposes drafts from the sequence's own tokens and its program's finished turns."""

    def __init__(
        self, *, history_tokens: int = HISTORY_TOKENS, docs_per_program: int = DOCS_PER_PROGRAM
    ) -> None:
        self.history_tokens = history_tokens
        self.docs_per_program = docs_per_program
        self._live: dict[int, _Live] = {}
        self._programs: OrderedDict[str, _History] = OrderedDict()  # least recent first
        self._history_size = 0
        self.lookups = 0
        self.matches = 0

    def _state(self, seq: Sequence) -> _Live:
        live = self._live.get(seq.seq_id)
        if live is None:
            req = seq.request
            live = _Live(DocIndex(seq.token_ids, short=True), req.program_id, req.last_turn)
            self._live[seq.seq_id] = live
        if live.program is not None:
            hist = self._programs.get(live.program)
            if hist is not None and hist.version != live.version:
                # Turns this prompt already contains (the program's earlier turns) add nothing.
                prompt = seq.token_ids
                live.others = [d for d in hist.docs if prompt[: len(d)] != d.tokens]
                live.version = hist.version
        return live

    def propose(self, seq: Sequence, limit: int) -> tuple[int, ...]:
        """Up to `limit` tokens that may follow `seq.token_ids`."""
        if limit <= 0:
            return ()
        live = self._state(seq)
        doc = live.doc
        doc.sync()
        tail = seq.token_ids
        end = len(tail) - 1
        self.lookups += 1
        m, p = doc.best(tail, end, 0)
        src = doc
        for other in live.others:
            m2, p2 = other.best(tail, end, m)
            if m2 > m:
                m, p, src = m2, p2, other
        if m == 0 and doc.last2 is not None and doc.last1 is not None:
            if end >= 1:
                p = doc.last2.get((tail[end - 1], tail[end]), -1)
                m = 2 if p >= 0 else 0
            if m == 0:
                p = doc.last1.get(tail[end], -1)
                m = 1 if p >= 0 else 0
        if m == 0:
            return ()
        self.matches += 1
        n = min(limit, math.ceil(SCALE * m))
        out = src.tokens[p + 1 : p + 1 + n]
        if src is doc and len(out) < n:
            # The match runs into the tail itself: the text is periodic with period end - p
            # over the match (a loop), so it goes on repeating.
            period = end - p
            j = p + 1 + len(out)
            while len(out) < n:
                out.append(tail[j - period * ((j - p - 1) // period)])
                j += 1
        return tuple(out)

    def release(self, seq_id: int) -> None:
        """The sequence finished (or was aborted): its tokens join its program's history."""
        live = self._live.pop(seq_id, None)
        if live is None or live.program is None:
            return
        pid = live.program
        hist = self._programs.pop(pid, None)
        if live.last_turn:  # the program ends: nothing will look its history up
            if hist is not None:
                self._history_size -= sum(len(d) for d in hist.docs)
            return
        hist = hist or _History()
        self._programs[pid] = hist  # most recent last
        new = live.doc
        kept = [new]
        for d in hist.docs:  # an earlier turn this one continues is redundant
            if len(kept) < self.docs_per_program and new.tokens[: len(d)] != d.tokens:
                kept.append(d)
        self._history_size += sum(len(d) for d in kept) - sum(len(d) for d in hist.docs)
        hist.docs = kept
        hist.version += 1
        while self._history_size > self.history_tokens and len(self._programs) > 1:
            _, old = self._programs.popitem(last=False)
            self._history_size -= sum(len(d) for d in old.docs)
        new.sync()

    @property
    def history_size(self) -> int:
        return self._history_size


class LookupPolicy(TokenPolicy):
    """Token-level speculation whose drafts come from a `SuffixDrafter`: the policy's k (from
    the row's acceptance rate) caps the proposal, and the proposal's length is the row's k."""

    def __init__(self, config: SpecConfig, drafter: SuffixDrafter | None = None) -> None:
        super().__init__(config)
        self.drafter = drafter or SuffixDrafter()
        self._proposals: dict[int, tuple[int, ...]] = {}

    def draft_len(self, seq: Sequence) -> int:
        k = super().draft_len(seq)
        prop = self.drafter.propose(seq, k) if k > 0 else ()
        self._proposals[seq.seq_id] = prop
        return len(prop)

    def proposal(self, seq_id: int) -> tuple[int, ...]:
        return self._proposals.get(seq_id, ())

    def release(self, seq_id: int) -> None:
        super().release(seq_id)
        self._proposals.pop(seq_id, None)
        self.drafter.release(seq_id)

"""Lookup drafts (suffix.py, pure Python): what they propose, from where, and their bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.llm.engine.config import SpecConfig
from harness.llm.engine.sequence import EngineRequest, Sequence
from harness.llm.engine.suffix import MAX_MATCH, DocIndex, LookupPolicy, SuffixDrafter


def _seq(
    seq_id: int,
    prompt: list[int],
    out: list[int] = (),
    program: str | None = None,
    last_turn: bool = False,
) -> Sequence:  # type: ignore[assignment]
    req = EngineRequest(tuple(prompt), max_tokens=512, program_id=program, last_turn=last_turn)
    return Sequence(seq_id, req, 0.0, 0.0, [*prompt, *out])


def test_proposes_what_followed_the_earlier_occurrence() -> None:
    # "def f(x): return g(x)" twice in the prompt; the output starts a third copy.
    line = [10, 11, 12, 13, 14, 15, 16, 17]
    seq = _seq(0, [1, *line, 2, 3, *line, 4], out=[10, 11, 12])
    assert SuffixDrafter().propose(seq, 4) == (13, 14, 15, 16)
    assert SuffixDrafter().propose(seq, 2) == (13, 14)  # the policy's k caps it


def test_the_longest_match_wins_over_a_more_recent_short_one() -> None:
    # [7, 8, 9] occurs twice: after [5, 6] (followed by 20, 21) and later after [0, 0]
    # (followed by 30, 31). The tail [5, 6, 7, 8, 9] matches the first one further back.
    prompt = [5, 6, 7, 8, 9, 20, 21, 22, 0, 0, 7, 8, 9, 30, 31, 32]
    seq = _seq(0, prompt, out=[40, 5, 6, 7, 8, 9])
    assert SuffixDrafter().propose(seq, 3) == (20, 21, 22)
    # Equal lengths: the most recent occurrence.
    seq = _seq(1, [1, 7, 8, 9, 20, 2, 7, 8, 9, 30], out=[3, 7, 8, 9])
    assert SuffixDrafter().propose(seq, 1) == (30,)


def test_a_short_match_proposes_little() -> None:
    # Only the last two tokens occurred before: at most ceil(2 * 2) = 4 tokens.
    seq = _seq(0, [1, 2, 3, 4, 5, 6, 7, 8, 9], out=[50, 2, 3])
    assert SuffixDrafter().propose(seq, 16) == (4, 5, 6, 7)
    assert SuffixDrafter().propose(_seq(1, [1, 2, 3], out=[99]), 8) == ()  # nothing matches


def test_a_loop_in_the_output_predicts_itself() -> None:
    loop = [21, 22, 23, 24, 25]
    seq = _seq(0, [1, 2, 3], out=loop * 3 + loop[:2])
    assert SuffixDrafter().propose(seq, 8) == (23, 24, 25, 21, 22, 23, 24, 25)


def test_earlier_turns_of_the_program_are_searched() -> None:
    drafter = SuffixDrafter()
    reply = [60, 61, 62, 63, 64, 65, 66, 67]
    first = _seq(0, [1, 2, 3, 4], out=[9, *reply, 8], program="p")
    drafter.propose(first, 4)
    drafter.release(0)
    # A second call of the program with a different prompt (a parallel relevance call,
    # another stage) starts writing the same reply.
    second = _seq(1, [5, 6, 7], out=[60, 61, 62], program="p")
    assert drafter.propose(second, 4) == (63, 64, 65, 66)
    # Another program does not see it.
    other = _seq(2, [5, 6, 7], out=[60, 61, 62], program="q")
    assert drafter.propose(other, 4) == ()


def test_history_skips_turns_the_prompt_contains_and_stays_bounded() -> None:
    drafter = SuffixDrafter(history_tokens=40, docs_per_program=2)
    turn1 = _seq(0, [1, 2, 3], out=[4, 5, 6], program="p")
    drafter.propose(turn1, 2)
    drafter.release(0)
    # The next turn's prompt continues turn 1: turn 1 is redundant in its history.
    turn2 = _seq(1, [1, 2, 3, 4, 5, 6, 7], out=[8], program="p")
    live = drafter._state(turn2)
    assert live.others == []
    drafter.release(1)
    assert [len(d) for d in drafter._programs["p"].docs] == [8]  # turn 1 folded into turn 2
    for i in range(2, 12):  # other programs push the history over its budget
        s = _seq(i, list(range(100 * i, 100 * i + 10)), program=f"r{i}")
        drafter.propose(s, 1)
        drafter.release(i)
    assert drafter.history_size <= 40
    assert "p" not in drafter._programs  # least recently used first
    last = _seq(20, [1], out=[2], program="r11", last_turn=True)
    drafter.propose(last, 1)
    drafter.release(20)
    assert "r11" not in drafter._programs  # a program's last turn ends its history


def test_policy_drafts_the_proposal_and_only_it() -> None:
    policy = LookupPolicy(SpecConfig(k=8, adaptive=False))
    line = list(range(10, 30))
    seq = _seq(0, [*line, 1], out=line[:5])
    assert policy.draft_len(seq) == 8
    assert policy.proposal(0) == tuple(line[5:13])
    short = _seq(1, [*line, 1], out=[77, 10, 11, 12])  # a 3-token match: at most 6 drafts
    assert policy.draft_len(short) == 6
    policy.release(0)
    assert policy.proposal(0) == ()


tokens = st.lists(st.integers(0, 5), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(prompt=tokens, out=st.lists(st.integers(0, 5), max_size=60), limit=st.integers(1, 20))
def test_a_proposal_continues_an_earlier_occurrence_of_the_tail(
    prompt: list[int], out: list[int], limit: int
) -> None:
    seq = _seq(0, prompt, out)
    toks = seq.token_ids
    prop = SuffixDrafter().propose(seq, limit)
    assert len(prop) <= limit
    if not prop:
        return
    n = len(toks)
    # Some earlier position p ends a copy of the last token and is followed by the proposal
    # (as far as the text goes; a loop running into the tail repeats).
    assert any(
        toks[p] == toks[-1]
        and prop[: n - 1 - p] == tuple(toks[p + 1 : p + 1 + min(len(prop), n - 1 - p)])
        for p in range(n - 1)
    )


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.integers(0, 2), min_size=3, max_size=200))
def test_index_finds_the_longest_backward_match(a: list[int]) -> None:
    doc = DocIndex(a)
    doc.sync()
    end = len(a) - 1
    m, p = doc.best(a, end, 0)
    # Brute force over the positions the chains may hold (the CHAIN most recent anchors).
    best = 0
    for q in range(2, end):
        k = 0
        while k < min(MAX_MATCH, q + 1) and a[q - k] == a[end - k]:
            k += 1
        best = max(best, k) if k >= 3 else best
    assert m <= best
    if m:
        assert a[p - m + 1 : p + 1] == a[end - m + 1 : end + 1]

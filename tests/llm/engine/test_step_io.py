"""The lean engine step: one staged host-to-device copy per forward pass, one device-to-host
read per step, no per-row `.item()`, block tables kept on the device and exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.llm.engine.config import EngineConfig, SpecConfig
from harness.llm.engine.engine import Engine
from harness.llm.engine.runner import ModelRunner
from harness.llm.engine.sequence import EngineRequest, SamplingParams
from harness.llm.engine.speculative import speculative_runner
from harness.llm.engine.tables import Staging
from tests.llm.engine.conftest import VOCAB, tiny_model


def _engine(kind: str, **kw: Any) -> Engine:
    cfg = EngineConfig(**{"block_size": 4, "num_blocks": 256, "max_batched_tokens": 64, **kw})
    model = tiny_model(layers=1)
    if kind == "plain":
        return Engine(ModelRunner(model, cfg), cfg, adapt_prefill_rate=False)
    runner = speculative_runner(model, cfg, SpecConfig(k=4), lookup=True)
    return Engine(runner, cfg, adapt_prefill_rate=False, draft_len=runner.policy.draft_len)


def _add(engine: Engine, n: int) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        prompt = torch.randint(0, VOCAB, (9 + 3 * i,), generator=g).tolist()
        prompt += prompt  # repeats: lookup drafts find something
        params = SamplingParams() if i % 2 else SamplingParams(temperature=0.8, top_p=0.9, seed=i)
        engine.add_request(EngineRequest(tuple(prompt), max_tokens=24, sampling=params))


@pytest.mark.parametrize("kind", ["plain", "lookup"])
def test_one_copy_in_and_one_read_out_per_step(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(kind)
    _add(engine, 6)
    sends = reads = 0
    real_send, real_tolist = Staging.send, torch.Tensor.tolist

    def send(self: Staging) -> Any:
        nonlocal sends
        sends += 1
        return real_send(self)

    def tolist(self: torch.Tensor) -> Any:
        nonlocal reads
        reads += 1
        return real_tolist(self)

    def item(self: torch.Tensor) -> Any:
        raise AssertionError("a per-row .item() in the engine step")

    monkeypatch.setattr(Staging, "send", send)
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    monkeypatch.setattr(torch.Tensor, "item", item)
    steps = 0
    while engine.has_unfinished():
        sends = reads = 0
        out = engine.scheduler.schedule(engine.clock.now())
        sampled = engine.runner.execute(out)
        engine.scheduler.postprocess(out, sampled, engine.clock.now())
        samples = any(it.sample for it in out.items)
        assert sends == (1 if out.items else 0)
        assert reads == (1 if samples else 0)
        steps += 1
    assert steps > 10


def test_device_block_tables_follow_every_change() -> None:
    """Speculative rollbacks trim tables, preemption replaces them, new blocks extend them:
    after each step, what the runner writes for a sequence is exactly its table."""
    engine = _engine("lookup", reserve_decode=False, num_blocks=24)  # pressure: preemption
    _add(engine, 5)
    runner = engine.runner
    tables = runner.target.tables  # type: ignore[attr-defined]
    while engine.has_unfinished():
        engine.step()
        running = list(engine.scheduler.running)
        rows = [tables.row(s) for s in running]
        st = Staging(torch.device("cpu"))
        seg = tables.stage(st)
        tables.apply(st.send(), seg)
        for seq, r in zip(running, rows, strict=True):
            n = len(seq.block_table)
            assert tables.tensor[r, :n].tolist() == seq.block_table
    assert engine.scheduler.stats.preemptions > 0

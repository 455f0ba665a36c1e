"""Turning an OpenAI request body into a ChatRequest (the error cases run through HTTP in
test_server.py)."""

from __future__ import annotations

import pytest

from harness.llm.base import Message, Sampling
from harness.llm.wire import BadRequest, parse_chat_request


def test_full_body_maps_every_field() -> None:
    parsed = parse_chat_request(
        {
            "model": "anything",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": None},
            ],
            "temperature": 0.5,
            "top_p": 0.8,
            "max_completion_tokens": 77,
            "seed": 9,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "program_id": "traj-2",
            "last_turn": True,
            "next_tool": "run_test",
        }
    )
    request = parsed.request
    assert request.messages == (
        Message("system", "be brief"),
        Message("user", "ab"),
        Message("assistant", ""),
    )
    assert request.sampling == Sampling(temperature=0.5, top_p=0.8, max_tokens=77, seed=9)
    assert request.stop == ("END",)
    assert (request.program_id, request.last_turn, request.next_tool) == (
        "traj-2",
        True,
        "run_test",
    )
    assert parsed.stream and parsed.include_usage


def test_defaults_follow_openai() -> None:
    parsed = parse_chat_request({"messages": [{"role": "user", "content": "x"}]})
    assert parsed.request.sampling == Sampling(temperature=1.0, top_p=1.0)
    assert parsed.request.stop == () and parsed.request.program_id is None
    assert not parsed.stream and not parsed.include_usage


def test_max_tokens_wins_over_max_completion_tokens() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "max_completion_tokens": 9,
    }
    assert parse_chat_request(body).request.sampling.max_tokens == 5


@pytest.mark.parametrize(
    "extra",
    [
        {"top_p": 0},
        {"stream_options": []},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"messages": ["hi"]},
    ],
)
def test_more_bad_bodies(extra: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        parse_chat_request({"messages": [{"role": "user", "content": "x"}], **extra})


@pytest.mark.parametrize("seed", [-(2**63), 0, 2**63 - 1])
def test_seed_takes_the_whole_int64_range(seed: int) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "seed": seed}
    assert parse_chat_request(body).request.sampling.seed == seed


def test_model_is_checked_only_against_served_names() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "model": "gpt-5"}
    assert parse_chat_request(body).request.messages  # no names given: any model
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(body, models=("tiny",))
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    assert parse_chat_request({**body, "model": "tiny"}, models=("tiny",)).request.messages
    del body["model"]
    assert parse_chat_request(body, models=("tiny",)).request.messages  # absent: the served one


def test_nulls_mean_absent() -> None:
    nulls = dict.fromkeys(["temperature", "top_p", "max_tokens", "seed", "stop", "tools"])
    parsed = parse_chat_request({"messages": [{"role": "user", "content": "x"}], **nulls})
    assert parsed.request.sampling == Sampling(temperature=1.0, top_p=1.0)

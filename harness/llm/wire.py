"""The OpenAI chat-completions request body, checked and turned into a `ChatRequest`.

Pure and strict: every problem becomes a `BadRequest` naming the field, which the server
answers with HTTP 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.llm.base import ChatRequest, Message, Role, Sampling

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
}


class BadRequest(ValueError):
    """The request body breaks the API; the message says which field and how."""


@dataclass(frozen=True)
class ParsedRequest:
    request: ChatRequest
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage


def parse_chat_request(body: object) -> ParsedRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = tuple(_message(m, i) for i, m in enumerate(_list(body, "messages")))
    if not messages:
        raise BadRequest("'messages' must not be empty")
    if _int(body, "n", 1, low=1) != 1:
        raise BadRequest("'n' must be 1: this server returns one choice")
    limits = [_int(body, key, None, low=1) for key in ("max_tokens", "max_completion_tokens")]
    # OpenAI's default temperature is 1; clients wanting greedy decoding send 0.
    sampling = Sampling(
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=0.0, high=1.0),
        max_tokens=next((v for v in limits if v is not None), Sampling().max_tokens),
        seed=_int(body, "seed", None),
    )
    if sampling.top_p == 0:
        raise BadRequest("'top_p' must be greater than 0")
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    return ParsedRequest(
        request=ChatRequest(
            messages=messages,
            sampling=sampling,
            stop=_stop(body.get("stop")),
            program_id=_str(body, "program_id"),
            last_turn=_bool(body, "last_turn", False),
            next_tool=_str(body, "next_tool"),
        ),
        stream=_bool(body, "stream", False),
        include_usage=_bool(options, "include_usage", False),
    )


def _message(raw: object, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with 'role' and 'content'")
    role = raw.get("role")
    if role not in _ROLES:
        raise BadRequest(f"{where}.role is {role!r}; expected one of {', '.join(_ROLES)}")
    content = raw.get("content")
    if content is None and role == "assistant":
        content = ""
    if isinstance(content, list):  # content parts: only text parts are understood
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise BadRequest(f"{where}.content: only text parts are supported")
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}.content: a text part needs a string 'text'")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise BadRequest(f"{where}.content must be a string or a list of text parts")
    return Message(_ROLES[role], content)


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    raise BadRequest("'stop' must be a string or a list of strings")


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"'{key}' is required and must be a list")
    return value


def _number(body: dict[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"'{key}' must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _int(
    body: dict[str, Any], key: str, default: int | None, *, low: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        floor = f" of at least {low}" if low is not None else ""
        raise BadRequest(f"'{key}' must be an integer{floor}, got {value!r}")
    return value


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string, got {value!r}")
    return value


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be true or false, got {value!r}")
    return value

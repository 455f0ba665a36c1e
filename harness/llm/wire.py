"""The OpenAI chat-completions request body, checked and turned into a `ChatRequest`.

Pure and strict, as api.openai.com is: every problem becomes a `BadRequest` naming the field
(`param`), a wrong type, a value out of range, an unknown field or a feature this server lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from harness.llm.base import ChatRequest, Message, Role, Sampling

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
}
INT64 = (-(1 << 63), (1 << 63) - 1)  # OpenAI's range for `seed`
MAX_TOKENS = (1 << 31) - 1
MAX_STOPS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # each stop string is searched for in every step's decoded tail
MAX_HINT_CHARS = 256  # program_id / next_tool are kept by the engine across turns


class BadRequest(ValueError):
    """The request breaks the API. `param` names the field; `code` and `status` follow
    OpenAI's error replies (400, or 404 for an unknown model)."""

    def __init__(
        self, message: str, *, param: str | None, code: str = "invalid_value", status: int = 400
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ParsedRequest:
    request: ChatRequest
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage


def parse_chat_request(body: object, *, models: Collection[str] = ()) -> ParsedRequest:
    """Check `body` and map it. `models`: the names served; another name gets a 404 (an absent
    `model` means the served model)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", param=None, code="invalid_type")
    for key in body:
        if key not in _FIELDS:
            raise BadRequest(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
    for key, check in _FIELDS.items():
        if check is not None and body.get(key) is not None:
            check(body[key], key)
    model = _str(body, "model")
    if model is not None and models and model not in models:
        raise BadRequest(
            f"The model '{model}' does not exist; this server serves {', '.join(sorted(models))}",
            param="model",
            code="model_not_found",
            status=404,
        )
    raw = body.get("messages")
    if raw is None:
        raise BadRequest(
            "Missing required parameter: 'messages'",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(raw, list):
        raise _type("messages", "an array", raw)
    if not raw:
        raise BadRequest("'messages' must not be empty", param="messages", code="empty_array")
    messages = tuple(_message(m, i) for i, m in enumerate(raw))
    if _int(body, "n", 1, 128) not in (None, 1):
        raise _unsupported("n", "'n' must be 1: this server returns one choice")
    limits = [_int(body, key, 1, MAX_TOKENS) for key in ("max_tokens", "max_completion_tokens")]
    # OpenAI's default temperature is 1; clients wanting greedy decoding send 0.
    sampling = Sampling(
        temperature=_number(body, "temperature", 0.0, 2.0, default=1.0),
        top_p=_number(body, "top_p", 0.0, 1.0, default=1.0),
        max_tokens=next((v for v in limits if v is not None), Sampling().max_tokens),
        seed=_int(body, "seed", *INT64),
    )
    if sampling.top_p == 0:
        raise BadRequest("'top_p' must be greater than 0", param="top_p")
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest(
            "'stream_options' is only allowed when 'stream' is true", param="stream_options"
        )
    options = _object(body, "stream_options") or {}
    for key in options:
        if key not in ("include_usage", "include_obfuscation"):
            raise BadRequest(
                f"Unrecognized argument stream_options.{key}",
                param=f"stream_options.{key}",
                code="unknown_parameter",
            )
    _bool(options, "include_obfuscation", "stream_options.include_obfuscation")
    return ParsedRequest(
        request=ChatRequest(
            messages=messages,
            sampling=sampling,
            stop=_stop(body.get("stop")),
            program_id=_str(body, "program_id", MAX_HINT_CHARS),
            last_turn=_bool(body, "last_turn"),
            next_tool=_str(body, "next_tool", MAX_HINT_CHARS),
        ),
        stream=stream,
        include_usage=_bool(options, "include_usage", "stream_options.include_usage"),
    )


def _message(raw: object, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise _type(where, "an object with 'role' and 'content'", raw)
    role = raw.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        hint = " (this server has no tool calling)" if role in ("tool", "function") else ""
        raise BadRequest(
            f"{where}.role is {role!r}; expected one of {', '.join(_ROLES)}{hint}",
            param=f"{where}.role",
        )
    allowed = {"role", "content", "name"}
    if role == "assistant":
        allowed |= {"refusal", "tool_calls", "function_call", "audio"}
    for key, value in raw.items():
        if key not in allowed:
            raise BadRequest(
                f"{where}: unrecognized field {key!r}", param=f"{where}.{key}", code="unknown_field"
            )
        if key in ("name", "refusal") and value is not None and not isinstance(value, str):
            raise _type(f"{where}.{key}", "a string", value)
        if key in ("tool_calls", "function_call", "audio") and value not in (None, []):
            raise _unsupported(f"{where}.{key}", f"{where}.{key}: this server has no tool calling")
    content = raw.get("content")
    if content is None and role == "assistant":
        content = ""
    if isinstance(content, list):  # content parts: only text parts are understood
        parts = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _type(at, "an object with a 'type'", part)
            if part["type"] != "text":
                raise _unsupported(f"{at}.type", f"{at}: only text parts are supported")
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise BadRequest(f"{at}: a text part is {{'type', 'text': string}}", param=at)
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise _type(f"{where}.content", "a string or a list of text parts", content)
    return Message(_ROLES[role], content)


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type("stop", "a string or a list of strings", raw)
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"'stop' holds at most {MAX_STOPS} strings", param="stop")
    if not all(0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise BadRequest(f"'stop' strings must have 1 to {MAX_STOP_CHARS} characters", param="stop")
    return tuple(stops)


# -- field checks -------------------------------------------------------------------------


def _type(param: str, expected: str, value: object) -> BadRequest:
    got = "null" if value is None else type(value).__name__
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, got {got} {value!r:.60}",
        param=param,
        code="invalid_type",
    )


def _unsupported(param: str, message: str | None = None) -> BadRequest:
    return BadRequest(
        message or f"'{param}' is not supported by this server",
        param=param,
        code="unsupported_value",
    )


def _number(
    body: dict[str, Any], key: str, low: float, high: float, *, default: float = 0.0
) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type(key, "a number", value)
    if not low <= value <= high:  # also NaN and the infinities Python's JSON reads
        raise BadRequest(f"'{key}' must be a number from {low} to {high}, got {value!r}", param=key)
    return float(value)


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type(key, "an integer", value)
    if not low <= value <= high:
        raise BadRequest(f"'{key}' must be an integer from {low} to {high}, got {value}", param=key)
    return value


def _str(body: dict[str, Any], key: str, max_chars: int | None = None) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _type(key, "a string", value)
    if value is not None and max_chars is not None and len(value) > max_chars:
        raise BadRequest(f"'{key}' is longer than {max_chars} characters", param=key)
    return value


def _bool(body: dict[str, Any], key: str, param: str | None = None) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _type(param or key, "true or false", value)
    return bool(value)


def _object(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        raise _type(key, "an object", value)
    return value


# Fields without a check are handled by `parse_chat_request` itself; the rest are accepted
# with no effect here, or only at their neutral value (anything else needs a feature this
# server lacks, and silently ignoring it would answer a different question).
_Check = Callable[[object, str], None]


def _typed(kind: Callable[[dict[str, Any], str], object]) -> _Check:
    def check(value: object, key: str) -> None:
        kind({key: value}, key)

    return check


def _neutral(kind: Callable[[dict[str, Any], str], object], *neutral: object) -> _Check:
    def check(value: object, key: str) -> None:
        if kind({key: value}, key) not in neutral:
            raise _unsupported(key)

    return check


def _penalty(body: dict[str, Any], key: str) -> float:
    return _number(body, key, -2.0, 2.0)


def _top_logprobs(body: dict[str, Any], key: str) -> int | None:
    return _int(body, key, 0, 20)


def _choice(body: dict[str, Any], key: str) -> object:
    value = body[key]
    if not isinstance(value, str | dict):
        raise _type(key, "a string or an object", value)
    return value


def _list(body: dict[str, Any], key: str) -> object:
    value = body[key]
    if not isinstance(value, list):
        raise _type(key, "an array", value)
    return value


def _format(body: dict[str, Any], key: str) -> object:
    value = _object(body, key) or {}
    if not isinstance(value.get("type"), str):
        raise BadRequest(f"'{key}' needs a string 'type'", param=f"{key}.type")
    return value["type"]


def _metadata(value: object, key: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _type(key, "an object of strings", value)


def _anything_but_set(value: object, key: str) -> None:
    raise _unsupported(key)


_FIELDS: dict[str, _Check | None] = {
    "model": None,
    "messages": None,
    "temperature": None,
    "top_p": None,
    "max_tokens": None,
    "max_completion_tokens": None,
    "n": None,
    "seed": None,
    "stop": None,
    "stream": None,
    "stream_options": None,
    # harness extensions: scheduling hints for the engine
    "program_id": None,
    "last_turn": None,
    "next_tool": None,
    # accepted, with no effect here
    "user": _typed(_str),
    "safety_identifier": _typed(_str),
    "prompt_cache_key": _typed(_str),
    "service_tier": _typed(_str),
    "store": _typed(_bool),
    "parallel_tool_calls": _typed(_bool),
    "metadata": _metadata,
    # accepted at their neutral value only
    "frequency_penalty": _neutral(_penalty, 0.0),
    "presence_penalty": _neutral(_penalty, 0.0),
    "logprobs": _neutral(_bool, False),
    "top_logprobs": _neutral(_top_logprobs, 0),
    "logit_bias": _neutral(_object, {}),
    "tools": _neutral(_list, []),
    "functions": _neutral(_list, []),
    "tool_choice": _neutral(_choice, "none", "auto"),
    "function_call": _neutral(_choice, "none", "auto"),
    "response_format": _neutral(_format, "text"),
    "modalities": _neutral(_list, ["text"]),
    "reasoning_effort": _anything_but_set,
    "verbosity": _anything_but_set,
    "audio": _anything_but_set,
    "prediction": _anything_but_set,
    "web_search_options": _anything_but_set,
}

"""An OpenAI-compatible HTTP server over any `LLM` (starlette + uvicorn): `harness serve`.

Routes: POST /v1/chat/completions (SSE streaming with `stream: true`), GET /v1/models[/{id}],
GET /health (503 when the backend cannot serve). The extension fields program_id, last_turn
and next_tool pass into `ChatRequest`. A client that goes away stops its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from harness.errors import ConfigError, ContextTooLong, HarnessError, LLMError
from harness.llm.base import LLM, ChatRequest, ChatResponse, StreamingLLM, TextDelta
from harness.llm.wire import BadRequest, parse_chat_request

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BODY_BYTES = 16 << 20  # a whole 128k-token context is well under 1 MiB of text


@runtime_checkable
class ReportsHealth(Protocol):
    """A backend that knows when it cannot serve (the engine: closed, or its loop died)."""

    def health(self) -> str | None:
        """None while it can serve; otherwise why it cannot."""
        ...


@dataclass
class ServerStats:
    """Counters of one app: requests by outcome, and clients that left before their answer
    (their generation was stopped)."""

    requests: int = 0
    rejected: int = 0  # 4xx
    failed: int = 0  # 5xx
    client_gone: int = 0


def error_response(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _health(llm: LLM) -> str | None:
    return llm.health() if isinstance(llm, ReportsHealth) else None


def _llm_error_response(exc: Exception, llm: LLM) -> JSONResponse:
    if not isinstance(exc, HarnessError):  # a bug or a fault inside the backend
        log.error("the model failed: %r", exc, exc_info=exc)
        return error_response(500, f"the model failed: {exc!r}", kind="server_error")
    if isinstance(exc, ContextTooLong):
        return error_response(400, str(exc), param="messages", code="context_length_exceeded")
    if _health(llm) is not None:  # retrying elsewhere may help; retrying here will not
        return error_response(503, str(exc), kind="server_error", code="service_unavailable")
    return error_response(500, str(exc), kind="server_error")


async def _events(llm: LLM, request: ChatRequest) -> AsyncGenerator[TextDelta | ChatResponse, None]:
    """Stream when the backend can; otherwise one delta with the whole answer."""
    if isinstance(llm, StreamingLLM):
        async for event in llm.stream(request):
            yield event
        return
    response = await llm.chat(request)
    if response.text:
        yield TextDelta(response.text)
    yield response


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, work: Awaitable[T]) -> tuple[T] | None:
    """(`work`'s result,), or None when the client went away first: `work` is then cancelled,
    which stops its generation, and awaited, so that the backend has let go of it."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (the server is stopping)
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task.done():
        return (task.result(),)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, HarnessError):
        await task
    return None


def build_app(
    llm: LLM,
    *,
    model_names: Sequence[str] = (),
    stats: ServerStats | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """The ASGI app. It does not own `llm`: the caller closes it.

    `model_names`: the names clients may ask for (default: the model's own name); another one
    gets OpenAI's 404 `model_not_found`. `stats` is updated as requests come and go.
    """
    names = tuple(model_names) or (llm.model_name,)
    counters = stats if stats is not None else ServerStats()

    async def health(request: Request) -> Response:
        reason = _health(llm)
        if reason is not None:
            return JSONResponse(
                {"status": "unavailable", "model": llm.model_name, "reason": reason},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "model": llm.model_name})

    def card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "harness"}

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card(n) for n in names]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in names:
            return error_response(
                404, f"The model '{name}' does not exist", param="model", code="model_not_found"
            )
        return JSONResponse(card(name))

    async def completions(request: Request) -> Response:
        counters.requests += 1
        reply = await _complete(request)
        if 400 <= reply.status_code < 500:
            counters.rejected += 1
        elif reply.status_code >= 500:
            counters.failed += 1
        return reply

    async def _complete(request: Request) -> Response:
        try:
            body = json.loads(await _read_body(request, max_body_bytes))
        except _TooLarge:
            return error_response(413, f"the request body is over {max_body_bytes} bytes")
        except (ValueError, RecursionError):
            return error_response(400, "the request body is not valid JSON")
        try:
            parsed = parse_chat_request(body, models=names)
        except BadRequest as e:
            return error_response(e.status, str(e), param=e.param, code=e.code)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not parsed.stream:
            try:
                done = await _unless_gone(request, llm.chat(parsed.request))
            except Exception as e:
                return _llm_error_response(e, llm)
            if done is None:
                return _gone()
            return JSONResponse(_completion(completion_id, done[0]))
        events = _events(llm, parsed.request)
        try:
            # Errors found before the first token (a prompt too long) still get a status code.
            first = await _unless_gone(request, anext(events))
        except Exception as e:
            await events.aclose()
            return _llm_error_response(e, llm)
        if first is None:
            await events.aclose()
            return _gone()
        stream = _sse(completion_id, llm.model_name, parsed.include_usage, first[0], events)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    def _gone() -> Response:
        counters.client_gone += 1
        # Nobody reads this; 499 is the de facto code for "client closed request" in logs.
        return error_response(499, "the client closed the request")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error_response(status, f"{request.method} {request.url.path}: {detail}")

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s", request.url.path, exc_info=exc)
        return error_response(500, f"internal error: {exc!r}", kind="server_error")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/models/{name:path}", model),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: crash},
    )


def _completion(completion_id: str, response: ChatResponse) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text},
                "finish_reason": response.finish_reason,
            }
        ],
        "usage": _usage(response),
    }


def _usage(response: ChatResponse) -> dict[str, int]:
    u = response.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


async def _sse(
    completion_id: str,
    model: str,
    include_usage: bool,
    first: TextDelta | ChatResponse,
    events: AsyncGenerator[TextDelta | ChatResponse, None],
) -> AsyncIterator[str]:
    """OpenAI's chunk stream: a role chunk, content chunks, a finish chunk, [DONE]."""
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _data(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
        )

    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while isinstance(event, TextDelta):
            yield chunk({"content": event.text})
            event = await anext(events)
        yield chunk({}, event.finish_reason)
        if include_usage:
            usage = {"id": completion_id, "object": "chat.completion.chunk", "created": created}
            yield _data({**usage, "model": model, "choices": [], "usage": _usage(event)})
    except Exception as e:  # the status line went out long ago: the error becomes an event
        if not isinstance(e, HarnessError):
            log.error("the model failed while streaming: %r", e, exc_info=e)
        error = {"message": str(e), "type": "server_error", "param": None, "code": None}
        yield _data({"error": error})
    finally:
        await events.aclose()  # stops generation when the client went away
    yield "data: [DONE]\n\n"


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@asynccontextmanager
async def run_asgi(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on this event loop; yields the root URL (port 0 = a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e}") from e
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise LLMError(f"server on {host}:{bound} stopped while starting")
            await asyncio.sleep(0.01)
        url_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{url_host}:{bound}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def serving(
    llm: LLM,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    model_names: Sequence[str] = (),
    stats: ServerStats | None = None,
) -> AsyncIterator[str]:
    """Serve `llm` OpenAI-style; yields the base URL that clients use (ends in /v1)."""
    app = build_app(llm, model_names=model_names, stats=stats)
    async with run_asgi(app, host=host, port=port, log_level=log_level) as root:
        yield f"{root}/v1"

"""An OpenAI-compatible HTTP server over any `LLM` (starlette + uvicorn): `harness serve`.

Routes: POST /v1/chat/completions (SSE streaming with `stream: true`), GET /v1/models, GET
/health. The extension fields program_id, last_turn and next_tool pass into `ChatRequest`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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


def error_response(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None
) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _llm_error_response(exc: HarnessError) -> JSONResponse:
    if isinstance(exc, ContextTooLong):
        return error_response(400, str(exc), code="context_length_exceeded")
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


def build_app(llm: LLM) -> Starlette:
    """The ASGI app. It does not own `llm`: the caller closes it."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": llm.model_name})

    async def models(request: Request) -> Response:
        card = {"id": llm.model_name, "object": "model", "created": 0, "owned_by": "harness"}
        return JSONResponse({"object": "list", "data": [card]})

    async def completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "request body is not valid JSON")
        try:
            parsed = parse_chat_request(body)
        except BadRequest as e:
            return error_response(400, str(e))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not parsed.stream:
            try:
                response = await llm.chat(parsed.request)
            except HarnessError as e:
                return _llm_error_response(e)
            return JSONResponse(_completion(completion_id, response))
        events = _events(llm, parsed.request)
        try:
            # Errors found before the first token (a prompt too long) still get a status code.
            first = await anext(events)
        except HarnessError as e:
            await events.aclose()
            return _llm_error_response(e)
        stream = _sse(completion_id, llm.model_name, parsed.include_usage, first, events)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error_response(status, f"{request.method} {request.url.path}: {detail}")

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s", request.url.path, exc_info=exc)
        return error_response(500, f"internal error: {exc}", kind="server_error")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
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
    except HarnessError as e:
        yield _data({"error": {"message": str(e), "type": "server_error", "code": None}})
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
    llm: LLM, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve `llm` OpenAI-style; yields the base URL that clients use (ends in /v1)."""
    async with run_asgi(build_app(llm), host=host, port=port, log_level=log_level) as root:
        yield f"{root}/v1"

"""The request body guard, in front of every route: size caps, a read deadline, and what happens to
the connection when the answer comes before the body has been read.

- Size: each route has its own cap (``body_limit``): a voice upload ``max_upload_bytes``, a book
  ``max_book_bytes`` (413 ``book_too_large``), plus room for the form fields; every other body
  ``max_request_bytes``. A body over its cap is refused with 413 at once when Content-Length says
  so, and as soon as the bytes received pass it when the body is chunked.
- Time: the whole body must arrive within ``request_body_timeout_s`` of the request's headers;
  past it the request is answered 408 ``request_timeout``, so a slow sender holds a connection
  for a bounded time.
- Keys: with ``auth_required``, a request to ``/v1/`` that carries a body has its API key checked
  before any of the body is read: 401 at once, not after a 50 MiB upload.
- Connection: any response that starts before the request body was read to its end (a 413, a
  408, a 401, a 400 on a malformed form, a 415, ...) carries ``Connection: close``; the server
  closes the connection once it is sent and reads no more of that body. Keeping the connection
  open would mean reading the rest of the body (maybe gigabytes, or, chunked, without end) only
  to find where the next request starts.
- A client that hangs up before its body is complete is not an error of ours: it is logged at
  info and counted as status 499 (nginx's "client closed request") in the request metrics.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_min.deps import IDENTITY_SCOPE_KEY, resolve_identity
from api_min.errors import error_response
from jobs.runtime import Runtime
from jobs.settings import Settings

log = logging.getLogger("voxmill.api")

FORM_OVERHEAD = 256 * 1024  # multipart boundaries, headers and the text fields of an upload
UNCHECKED: Any = object()
CLIENT_CLOSED = 499  # the status recorded for a request whose client went away mid-body


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str, str]:
    """(cap in bytes, error code, what it limits) of a request's body."""
    route = path.rstrip("/")
    if method == "POST" and route == "/v1/voices":
        return settings.max_upload_bytes + FORM_OVERHEAD, "request_too_large", "the request body"
    if method == "POST" and route == "/v1/books":
        return settings.max_book_bytes + FORM_OVERHEAD, "book_too_large", "the book upload"
    return settings.max_request_bytes, "request_too_large", "the request body"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body. An HTTPException, so FastAPI's body parsing passes it on
    unchanged and the error handlers answer 413 with ``code``."""

    def __init__(self, limit: int, code: str, what: str) -> None:
        super().__init__(413, f"{what} is larger than {limit} bytes")
        self.code = code


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the body did not arrive within its deadline (408)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


class BodyGuard:
    """The ASGI middleware enforcing the module's rules. Installed inside the request metrics, so
    they see the statuses it answers or rewrites (413, 408, 401, 499)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.settings = runtime.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, code, what = body_limit(self.settings, scope["method"], scope["path"])
        declared, chunked = _body_headers(scope)
        body_done = not chunked and not declared  # no body at all: nothing left unread
        client_gone = False
        received = 0

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if client_gone:
                    message = {**message, "status": CLIENT_CLOSED}
                elif not body_done and not any(k.lower() == b"connection" for k, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        if declared is not None and declared > limit:
            await error_response(413, code, f"{what} is larger than {limit} bytes")(scope, receive, guarded_send)
            return
        if not body_done and self.settings.auth_required and scope["path"].startswith("/v1/"):
            authorization = next((v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"authorization"), None)
            try:
                identity = await run_in_threadpool(resolve_identity, self.runtime, authorization)
            except SQLAlchemyError:
                identity = UNCHECKED  # the route's own check answers (503 while the database is down)
            if identity is None:
                response = error_response(
                    401, "unauthorized", "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, guarded_send)
                return
            if identity is not UNCHECKED:
                scope[IDENTITY_SCOPE_KEY] = identity  # current_caller takes it from here

        timeout = self.settings.request_body_timeout_s
        deadline = anyio.current_time() + timeout if timeout > 0 else math.inf

        async def guarded_receive() -> Message:
            nonlocal received, body_done, client_gone
            if body_done:
                return await receive()  # e.g. a streaming response listening for a disconnect
            try:
                with anyio.fail_after(deadline - anyio.current_time() if deadline < math.inf else None):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, code, what)
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                client_gone = True
                log.info(
                    "client closed the connection during the request body",
                    extra={"fields": {"method": scope["method"], "path": scope["path"], "bytes_received": received}},
                )
            return message

        await self.app(scope, guarded_receive, guarded_send)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is chunked)."""
    headers: Any = scope.get("headers") or []
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked

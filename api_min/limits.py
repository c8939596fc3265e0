"""Request size limits, enforced before a route reads anything: a body larger than the limit is
refused with 413 ``request_too_large`` — at once when Content-Length says so, and as soon as the
bytes received pass it when the body is chunked. Voice uploads get ``max_upload_bytes`` plus room
for the form fields; every other body gets ``max_request_bytes``."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_min.errors import error_response
from jobs.settings import Settings

FORM_OVERHEAD = 256 * 1024  # multipart boundaries, headers and the text fields of an upload
UPLOAD_PATHS = ("/v1/voices",)


def body_limit(settings: Settings, method: str, path: str) -> int:
    if method == "POST" and path.rstrip("/") in UPLOAD_PATHS:
        return settings.max_upload_bytes + FORM_OVERHEAD
    return settings.max_request_bytes


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body. An HTTPException, so FastAPI's body parsing passes it on
    unchanged and the error handlers answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = error_response(413, "request_too_large", f"the request body is larger than {limit} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""Every API error is ``{"error": {"code", "message"[, "details"]}}`` with a stable code; this
module maps exceptions to that shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api_min.schemas import ErrorBody, ErrorDetail
from jobs.errors import RetryLater
from jobs.submission import RequestRejected

log = logging.getLogger("voxmill.api")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 408, 409, 413, 415, 422, 429, 503)
}

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# The API raises the same error the submission layer does: a status, a code, a message.
ApiError = RequestRejected


def error_response(
    status: int, code: str, message: str, details: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestRejected)
    async def _rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "the request does not match the schema", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RetryLater)
    async def _retry_later(_: Request, exc: RetryLater) -> JSONResponse:
        # A dependency is briefly unavailable (object storage): the client may retry as is.
        log.warning("service unavailable: %s", exc)
        return error_response(503, exc.code, exc.message, headers={"Retry-After": "5"})

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return error_response(
            503, "database_unavailable", "the database is unreachable; retry shortly", headers={"Retry-After": "5"}
        )

    @app.exception_handler(DataError)
    async def _unstorable_value(_: Request, exc: DataError) -> JSONResponse:
        # SQLSTATE class 22 ("data exception"): a value the client sent cannot be stored as is,
        # e.g. a NUL character, which PostgreSQL text cannot hold. The transaction was rolled back.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        log.warning("a request value the database refused: %s", reason)
        return error_response(422, "invalid_value", f"a value in the request cannot be stored: {reason}")

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error_response(
                503, "database_unavailable", "the database connection was lost; retry shortly", headers={"Retry-After": "5"}
            )
        log.exception("database error")
        return error_response(500, "internal_error", "internal error")

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client hung up before its request was read: nobody to answer, nothing of ours
        # failed. 499 is what the request metrics record (nginx's "client closed request").
        log.info("client closed the connection during the request", extra={"fields": {"path": request.url.path}})
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")

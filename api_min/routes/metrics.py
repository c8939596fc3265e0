"""Prometheus metrics of the API process: request latency, the counters of state changes this
process committed, and the depth of every queue read from the broker at scrape time."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api_min.deps import RuntimeDep
from jobs import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def get_metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus text exposition."""
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = metrics.api_registry(runtime)
    return Response(metrics.exposition(registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """``voxmill_http_request_duration_seconds`` per route template (not per URL: job ids would
    make a series each). A plain ASGI middleware: Starlette's BaseHTTPMiddleware would wrap the
    exceptions raised while a body is read (the 413 of ``api_min.limits``) into 400s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_SECONDS.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)


def install_request_metrics(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)

"""The HTTP submission API. It validates requests, writes rows through ``jobs.submission``,
answers status from the database and serves stored results. No model runs here."""

from __future__ import annotations

from fastapi import FastAPI

from api_min.errors import ERROR_RESPONSES, install_error_handlers
from api_min.limits import BodyGuard
from api_min.routes import api_v2, books, health, jobs, metrics, models, projects, tts, voices
from jobs.runtime import Runtime
from jobs.settings import Settings


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings or Settings())
    app = FastAPI(
        title="voxmill",
        version="0.1.0",
        description="Batch text-to-speech in a cloned voice (GPT-SoVITS).",
        responses=ERROR_RESPONSES,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    # The last added runs first: the metrics see what the body guard answers or rewrites.
    app.add_middleware(BodyGuard, runtime=runtime)
    metrics.install_request_metrics(app)
    routers = (health, jobs, voices, books, projects, tts, models, api_v2, metrics)
    for router in (module.router for module in routers):
        app.include_router(router)
    return app

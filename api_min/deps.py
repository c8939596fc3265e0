"""Request dependencies shared by the routers: the process's runtime, the caller (tenant and API
key, rate-limited per request) and the circuit breaker that guards synchronous synthesis. Work
that queues a job is admitted (characters, queued-job cap, callback URL) by
``jobs.limits.admit_job`` inside the submission."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Request

from api_min.errors import ApiError
from jobs import lifecycle
from jobs.runtime import Runtime
from jobs.tenants import Identity


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


IDENTITY_SCOPE_KEY = "voxmill.identity"  # set by api_min.limits when it checked the key before the body


def resolve_identity(runtime: Runtime, authorization: str | None) -> Identity | None:
    """The API key's identity, the default tenant when auth is off, or None (401)."""
    from jobs.tenants import identify

    with runtime.transaction() as session:
        if runtime.settings.auth_required:
            return identify(session, authorization)
        return Identity(lifecycle.default_tenant(session).id)


def current_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Identity:
    """Who the request acts for — the API key's tenant, or the default tenant when auth is off —
    after one token of the caller's requests-per-second bucket (429 when it is empty)."""
    from jobs.limits import admit_request

    runtime = get_runtime(request)
    identity: Identity | None = request.scope.get(IDENTITY_SCOPE_KEY) or resolve_identity(runtime, authorization)
    if identity is None:
        raise ApiError(401, "unauthorized", "a valid API key is required", {"WWW-Authenticate": "Bearer"})
    admit_request(runtime, identity)
    return identity


Caller = Annotated[Identity, Depends(current_caller)]


def current_tenant(caller: Caller) -> uuid.UUID:
    """The calling tenant's id. Another tenant's ids answer 404, never 403."""
    return caller.tenant_id


def require_sync_capacity(request: Request) -> None:
    """For synchronous synthesis routes: 503 + Retry-After while the breaker is open (the sovits
    queue is too deep or failing). Async job submission never depends on it."""
    from jobs.breaker import breaker

    state = breaker(get_runtime(request)).state()
    if state.open:
        raise ApiError(
            503,
            "sync_unavailable",
            f"synchronous synthesis is paused: {state.reason}; submit an async job or retry later",
            {"Retry-After": str(state.retry_after_s)},
        )


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TenantId = Annotated[uuid.UUID, Depends(current_tenant)]
SyncCapacity = Depends(require_sync_capacity)

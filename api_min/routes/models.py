"""Registered models, per tenant: ``GET/POST /v1/admin/models``, ``DELETE
/v1/admin/models/{name}``. A tenant sees its own models and the deployment's (registered with
``voxmill models add`` without ``--tenant``) and manages only its own. Files are named by path
on the workers' shared disk and must lie under ``VOXMILL_MODELS_DIR``: a tenant cannot make the
service read (and checksum) a file elsewhere."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from api_min.deps import RuntimeDep, TenantId
from api_min.errors import ApiError
from api_min.schemas import ModelIn, ModelList, ModelOut
from db.models import Model
from jobs import models
from jobs.runtime import Runtime

router = APIRouter(prefix="/v1/admin/models", tags=["models"])


def model_out(model: Model, tenant_id: uuid.UUID) -> ModelOut:
    own = model.tenant_id == tenant_id
    return ModelOut(
        name=model.name,
        scope="tenant" if model.tenant_id is not None else "deployment",
        generation=model.generation,
        gpt_sha256=model.gpt_sha256,
        sovits_sha256=model.sovits_sha256,
        gpt_path=model.gpt_path if own else None,
        sovits_path=model.sovits_path if own else None,
        created_at=model.created_at,
    )


@router.get("", response_model=ModelList)
def list_models(tenant_id: TenantId, runtime: RuntimeDep) -> ModelList:
    """The tenant's own models, then the deployment's."""
    with runtime.transaction() as session:
        return ModelList(data=[model_out(m, tenant_id) for m in models.visible_models(session, tenant_id)])


def _add(runtime: Runtime, tenant_id: uuid.UUID, body: ModelIn) -> ModelOut:
    root = runtime.settings.models_dir
    assert root is not None
    try:
        with runtime.transaction() as session:
            model = models.add_model(
                session,
                runtime.settings,
                body.name,
                root / Path(body.gpt),
                root / Path(body.sovits),
                tenant_id=tenant_id,
                under=root,
            )
            return model_out(model, tenant_id)
    except models.ModelError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@router.post("", status_code=201, response_model=ModelOut)
async def add_model(body: ModelIn, tenant_id: TenantId, runtime: RuntimeDep) -> ModelOut:
    """Register a GPT + SoVITS pair for this tenant. Paths are relative to the models folder (or
    absolute inside it); the generation is read from the SoVITS file and each file's sha256 is
    recorded. Jobs check the files against these checksums before loading them."""
    return await run_in_threadpool(_add, runtime, tenant_id, body)


@router.delete("/{name}", status_code=204, response_class=Response)
def remove_model(name: str, tenant_id: TenantId, runtime: RuntimeDep) -> Response:
    """Remove one of the tenant's models (409 ``model_in_use`` while a voice names it)."""
    try:
        with runtime.transaction() as session:
            models.remove_model(session, tenant_id, name)
    except models.ModelError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    return Response(status_code=204)

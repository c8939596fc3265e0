"""Projects: a book kept rendered — read it, change its voice, settings or schedule (a change
re-renders only what it makes stale), render it now."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api_min.deps import Caller, RuntimeDep
from api_min.schemas import JobOut, ProjectOut, ProjectPatch
from db.models import Project
from jobs.projects import load_project, render_project, update_project

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def project_out(project: Project) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        voice_id=project.voice_id,
        language=project.language,
        format=project.output_format,
        params=project.params,
        options=project.options,
        source_format=project.source_format,
        schedule_every_s=project.schedule_every_s,
        next_run_at=project.next_run_at,
        last_job_id=project.last_job_id,
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


@router.get("/{project_id}", response_model=ProjectOut)
def get_project(project_id: uuid.UUID, caller: Caller, runtime: RuntimeDep) -> ProjectOut:
    with runtime.transaction() as session:
        return project_out(load_project(session, caller.tenant_id, project_id))


@router.patch("/{project_id}", response_model=ProjectOut)
def patch_project(project_id: uuid.UUID, body: ProjectPatch, caller: Caller, runtime: RuntimeDep) -> ProjectOut:
    """Change the voice, synthesis params, book options or schedule. A change that alters the
    audio queues a render at once (``render: false`` leaves it to the schedule); that render is
    charged the book's characters and counts against the queued-job cap, like any job."""
    changes = body.model_dump(exclude={"render"}, exclude_none=True)
    update_project(runtime, caller.tenant_id, project_id, changes, render=body.render, caller=caller)
    with runtime.transaction() as session:
        return project_out(load_project(session, caller.tenant_id, project_id))


@router.post("/{project_id}/render", status_code=202, response_model=JobOut)
def render(project_id: uuid.UUID, caller: Caller, runtime: RuntimeDep) -> JobOut:
    """Render the project now; its unfinished render is superseded, finished segments reused.
    Charged the book's characters and counted against the queued-job cap, like any job."""
    from api_min.routes.jobs import job_out

    job_id = render_project(runtime, caller.tenant_id, project_id, caller=caller)
    return job_out(runtime, job_id, caller.tenant_id)

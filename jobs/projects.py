"""Projects kept rendered: re-rendered on their schedule (``schedule_every_s``) and whenever their
voice or the model version changes. A render is an ordinary book job of the project's stored
source; the render cache (``jobs.cache``) makes every segment whose content key is unchanged
finished at planning, so only stale segments are synthesised — a new voice or model version
changes every key, an unchanged project re-renders nothing and only re-assembles.

Celery beat sends ``regenerate_projects`` every ``projects_check_every_s``; the task runs on the
gpt queue, where the model version is known.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, Project, Voice, utcnow
from jobs import models
from jobs.books import BookOptions, _usable_voice, create_project_job
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.engine import SynthesisParams
from jobs.runtime import Runtime
from jobs.states import JOB_TERMINAL
from jobs.submission import RequestRejected
from jobs.tenants import Identity

log = logging.getLogger("voxmill.projects")
_TERMINAL = {s.value for s in JOB_TERMINAL}


def stale_reason(project: Project, last: Job | None, model_version: str) -> str | None:
    """Why the project's last render no longer matches the project, or None."""
    if last is None:
        return "never rendered"
    if last.voice_id != project.voice_id:
        return "voice changed"
    if last.model_version is not None and last.model_version != model_version:
        return "model version changed"
    return None


def expected_version(session: Session, runtime: Runtime, project: Project, default_version: str) -> str:
    """The model version a render of the project would record now: its voice's registered model
    (``jobs.models``), else the default files' version."""
    voice = session.get(Voice, project.voice_id)
    model = models.voice_model(session, runtime.settings, voice) if voice is not None else None
    return models.ModelRef.of(model).version if model is not None else default_version


def load_project(session: Session, tenant_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    project = session.get(Project, project_id)
    if project is None or project.tenant_id != tenant_id:
        raise RequestRejected(404, "project_not_found", f"no project {project_id}")
    return project


def update_project(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID,
    changes: dict[str, Any],
    render: bool = True,
    caller: Identity | None = None,
) -> tuple[uuid.UUID, uuid.UUID | None]:
    """Apply ``changes`` (voice_id, schedule_every_s, params, options); when anything changed
    and ``render``, a render is queued at once, admitted for ``caller`` (default: the tenant)
    like every job. Returns (project id, new job id or None)."""
    with runtime.transaction() as session:
        project = load_project(session, tenant_id, project_id)
        changed = False
        if changes.get("voice_id") is not None:
            voice = _usable_voice(session, tenant_id, changes["voice_id"])
            changed |= voice.id != project.voice_id
            project.voice_id = voice.id
        if "schedule_every_s" in changes and changes["schedule_every_s"] is not None:
            every = int(changes["schedule_every_s"])
            if 0 < every < 60:
                raise RequestRejected(422, "invalid_schedule", "schedule_every_s must be 0 or at least 60")
            project.schedule_every_s = every or None
            project.next_run_at = utcnow() + timedelta(seconds=every) if every else None
        if changes.get("params") is not None:
            params = SynthesisParams.from_dict(changes["params"]).as_dict()
            changed |= params != project.params
            project.params = params
        if changes.get("options") is not None:
            options = BookOptions.from_dict(changes["options"], runtime.settings).as_dict()
            changed |= options != project.options
            project.options = options
        project.updated_at = utcnow()
        job_id = None
        if changed and render:
            job_id = create_project_job(session, runtime, project, caller=caller or Identity(tenant_id)).id
        return project.id, job_id


def render_project(
    runtime: Runtime, tenant_id: uuid.UUID, project_id: uuid.UUID, caller: Identity | None = None
) -> uuid.UUID:
    """Queue a render now, admitted for ``caller`` (default: the tenant) like every job."""
    with runtime.transaction() as session:
        project = load_project(session, tenant_id, project_id)
        return create_project_job(session, runtime, project, caller=caller or Identity(tenant_id)).id


@dataclass
class RegenerationReport:
    rendered: dict[uuid.UUID, str] = field(default_factory=dict)  # project → why


def regenerate(runtime: Runtime, now: datetime | None = None) -> RegenerationReport:
    """Queue a render of every project that is stale (voice or model version changed) or due
    on its schedule, unless a render of its current state is already under way."""
    now = now or utcnow()
    model_version = runtime.model_version
    report = RegenerationReport()
    with runtime.transaction() as session:
        projects = session.scalars(select(Project).where(Project.source_key.is_not(None))).all()
        for project in projects:
            last = session.get(Job, project.last_job_id) if project.last_job_id else None
            reason = stale_reason(project, last, expected_version(session, runtime, project, model_version))
            due = bool(project.schedule_every_s and project.next_run_at and project.next_run_at <= now)
            if project.schedule_every_s and due:
                project.next_run_at = now + timedelta(seconds=project.schedule_every_s)
            running = last is not None and last.status not in _TERMINAL
            if reason is None and (not due or running):
                continue  # up to date, or due while a render of the current state runs
            if reason == "model version changed" and running:
                continue  # its queued render was planned before; it will finish first
            create_project_job(session, runtime, project)
            report.rendered[project.id] = reason or "scheduled"
    if report.rendered:
        log.info("re-rendering projects", extra={"fields": {str(k): v for k, v in report.rendered.items()}})
    return report


def register(app: Celery) -> None:
    @bound_task(app, TaskName.REGENERATE_PROJECTS)
    def regenerate_task(self: VoxmillTask) -> int:
        return len(regenerate(self.runtime).rendered)


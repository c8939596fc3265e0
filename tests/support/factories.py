"""Row factories for lifecycle tests."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from db.models import Job, Tenant, Voice
from jobs import lifecycle
from jobs.engine import SynthesisParams
from jobs.keys import content_key
from jobs.runtime import Runtime
from jobs.states import VoiceStatus


def tenant(session: Session, name: str | None = None) -> Tenant:
    row = Tenant(name=name or f"tenant-{uuid.uuid4().hex[:8]}")
    session.add(row)
    session.flush()
    return row


def ready_voice(session: Session, tenant_id: uuid.UUID) -> Voice:
    row = Voice(
        tenant_id=tenant_id,
        name="voice",
        status=VoiceStatus.READY.value,
        language="en",
        transcript="hello",
        features_key=f"voices/{uuid.uuid4()}/features.npz",
    )
    session.add(row)
    session.flush()
    return row


def running_job(session: Session, runtime: Runtime, texts: list[str], callback_url: str | None = None) -> Job:
    owner = tenant(session)
    voice = ready_voice(session, owner.id)
    job = lifecycle.create_job(
        session,
        runtime,
        tenant_id=owner.id,
        voice_id=voice.id,
        text=" ".join(texts),
        language="en",
        split_method="sentences",
        params=SynthesisParams().as_dict(),
        output_format="wav",
        sample_rate=32000,
        callback_url=callback_url,
    )
    planned = [lifecycle.PlannedSegment(t, content_key(t, voice.id, "v", {})) for t in texts]
    lifecycle.start_job(session, runtime, job.id, planned)
    session.flush()
    return job

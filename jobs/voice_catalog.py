"""A tenant's voices as clients manage them: list (newest first, keyset-paginated), rename,
delete. Deleting is the ``deleted`` transition in ``jobs.lifecycle``; the voice's stored
reference clips and features are removed once that is committed. Jobs already rendered keep
their audio (it is stored under the job and its segments, not the voice); unfinished jobs in the
voice fail at their next stage with ``voice_unavailable``."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from db.models import Voice, utcnow
from jobs import lifecycle
from jobs.keys import voice_object_key
from jobs.runtime import Runtime, after_commit
from jobs.states import VoiceStatus
from jobs.submission import RequestRejected, unstorable_reason

log = logging.getLogger("voxmill.voices")


def load_voice(session: Session, tenant_id: uuid.UUID, voice_id: uuid.UUID) -> Voice:
    """The tenant's voice; another tenant's or a deleted voice is 404, never 403."""
    voice = session.get(Voice, voice_id)
    if voice is None or voice.tenant_id != tenant_id or voice.status == VoiceStatus.DELETED.value:
        raise RequestRejected(404, "voice_not_found", f"no voice {voice_id}")
    return voice


def encode_cursor(voice: Voice) -> str:
    raw = f"{voice.created_at.isoformat()}|{voice.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, voice_id = raw.partition("|")
        created = datetime.fromisoformat(stamp)
        if created.tzinfo is None:
            raise ValueError("naive")
        return created, uuid.UUID(voice_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise RequestRejected(422, "invalid_cursor", "the cursor is not one this API returned") from None


def list_voices(
    session: Session, tenant_id: uuid.UUID, limit: int, cursor: str | None = None
) -> tuple[list[Voice], str | None]:
    """One page of the tenant's voices, newest first, and the cursor of the next page."""
    query = select(Voice).where(Voice.tenant_id == tenant_id, Voice.status != VoiceStatus.DELETED.value)
    if cursor:
        created, voice_id = decode_cursor(cursor)
        query = query.where(
            or_(Voice.created_at < created, and_(Voice.created_at == created, Voice.id < voice_id))
        )
    rows = list(session.scalars(query.order_by(Voice.created_at.desc(), Voice.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return page, encode_cursor(page[-1]) if len(rows) > limit else None


def rename_voice(session: Session, tenant_id: uuid.UUID, voice_id: uuid.UUID, name: str) -> Voice:
    voice = load_voice(session, tenant_id, voice_id)
    session.execute(
        update(Voice)
        .where(Voice.id == voice.id, Voice.status != VoiceStatus.DELETED.value)
        .values(name=name, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(voice)
    return voice


def set_voice_model(session: Session, tenant_id: uuid.UUID, voice_id: uuid.UUID, model_id: uuid.UUID | None) -> Voice:
    """The registered model the voice speaks with (None: the deployment default)."""
    voice = load_voice(session, tenant_id, voice_id)
    session.execute(
        update(Voice)
        .where(Voice.id == voice.id, Voice.status != VoiceStatus.DELETED.value)
        .values(model_id=model_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(voice)
    return voice


def delete_voice(session: Session, runtime: Runtime, tenant_id: uuid.UUID, voice_id: uuid.UUID) -> None:
    """Mark the voice deleted; its stored objects go once that is committed."""
    voice = load_voice(session, tenant_id, voice_id)
    keys = lifecycle.delete_voice(session, voice.id)
    prefix = voice_object_key(voice.tenant_id, voice.id, "")
    after_commit(session, lambda: remove_voice_objects(runtime, keys, prefix))


def remove_voice_objects(runtime: Runtime, keys: list[str], prefix: str) -> None:
    """The keys the row named, and anything else under the voice's prefix (features computed
    by another model version, or written by a worker that lost the race with the deletion)."""
    storage = runtime.storage
    try:
        for key in sorted(set(keys) | set(storage.list(prefix))):
            storage.delete(key)
    except Exception as exc:  # the row says deleted either way; the objects are unreachable
        log.warning("could not remove the objects of a deleted voice under %s: %s", prefix, exc)


def find_voice(session: Session, tenant_id: uuid.UUID, name_or_id: str) -> Voice | None:
    """A voice of the tenant named by id, or else by name: among the voices of that name a ready
    one before the others, the newest first. Deleted voices are never found."""
    if unstorable_reason(name_or_id) is not None:
        return None  # names are checked on the way in, so no voice can have this one
    alive = (Voice.tenant_id == tenant_id, Voice.status != VoiceStatus.DELETED.value)
    try:
        by_id = uuid.UUID(name_or_id)
    except ValueError:
        by_id = None
    if by_id is not None:
        found: Voice | None = session.scalar(select(Voice).where(Voice.id == by_id, *alive))
        return found
    named = session.scalars(select(Voice).where(Voice.name == name_or_id, *alive).order_by(Voice.created_at.desc())).all()
    ready = [v for v in named if v.status == VoiceStatus.READY.value]
    candidates = ready or list(named)
    return candidates[0] if candidates else None

"""Submitting a book (plain text, Markdown or EPUB) from the API or the CLI: the source is stored
as it came (content-addressed) and parsed where the job is planned, on the gpt queue, so the API
stays thin. A book always belongs to a project (by default named after its file); submitting it
again supersedes the project's unfinished render, and every segment already rendered — by any
job of the tenant — is reused through the render cache (``jobs.cache``).

Options a book takes (``BookOptions``):

- pauses: ``sentence`` (between segments of a paragraph), ``paragraph`` (after a paragraph and
  after a spoken chapter title), ``chapter`` (between chapters), in seconds;
- ``lexicon``: a pronunciation lexicon, ``{"written": "spoken"}``, applied to whole words
  (case-sensitive) before synthesis; subtitles keep the written text;
- ``speak_titles``: read each chapter's title at its start (default true).

Explicit pause markers in the text: ``[pause]`` (a paragraph pause), ``[pause 1.5s]``,
``[pause 700ms]`` — case-insensitive, at most 30 s; the text is cut there and the silence follows
what precedes the marker.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.models import Job, Project, Voice, utcnow
from jobs import lifecycle, models
from jobs.engine import SynthesisParams
from jobs.states import VoiceStatus
from jobs.tenants import Identity
from jobs.submission import (
    FORMAT_RATES,
    LANGUAGES,
    NATIVE_RATE,
    OUTPUT_FORMATS,
    SAMPLE_RATES,
    SPLIT_METHODS,
    RequestRejected,
    job_for_idempotency_key,
    race_winner,
    replay,
)

if TYPE_CHECKING:
    from jobs.runtime import Runtime
    from jobs.settings import Settings

SOURCE_FORMATS = ("text", "markdown", "epub")
SOURCE_EXTENSIONS = {"text": ".txt", "markdown": ".md", "epub": ".epub"}
MAX_PAUSE_S = 30.0
MAX_LEXICON_ENTRIES = 5000
EPUB_READ_BUDGET = 256 * 1024 * 1024  # decompressed bytes read to count an EPUB's characters


@dataclass(frozen=True)
class BookOptions:
    sentence_pause_s: float
    paragraph_pause_s: float
    chapter_pause_s: float
    speak_titles: bool = True
    lexicon: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, settings: Settings) -> BookOptions:
        """Validated options; ``RequestRejected`` (422 ``invalid_book_options``) says what is wrong."""
        raw = dict(data or {})
        pauses = dict(raw.pop("pauses", None) or {})
        lexicon = raw.pop("lexicon", None) or {}
        speak_titles = raw.pop("speak_titles", True)
        if raw:
            raise _invalid(f"unknown book options: {sorted(raw)}")
        defaults = {
            "sentence": settings.book_pause_sentence_s,
            "paragraph": settings.book_pause_paragraph_s,
            "chapter": settings.book_pause_chapter_s,
        }
        unknown = set(pauses) - set(defaults)
        if unknown:
            raise _invalid(f"unknown pauses: {sorted(unknown)}; known: sentence, paragraph, chapter")
        values: dict[str, float] = {}
        for name, default in defaults.items():
            value = pauses.get(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PAUSE_S:
                raise _invalid(f"pause {name!r} must be a number of seconds in [0, {MAX_PAUSE_S:g}]")
            values[name] = float(value)
        if not isinstance(lexicon, dict) or len(lexicon) > MAX_LEXICON_ENTRIES:
            raise _invalid(f"lexicon must be an object of at most {MAX_LEXICON_ENTRIES} entries")
        for written, spoken in lexicon.items():
            if not isinstance(spoken, str) or not written.strip() or len(written) > 100 or len(spoken) > 200:
                raise _invalid(f"lexicon entry {written!r}: a word (≤ 100 chars) → its spoken form (≤ 200 chars)")
        if not isinstance(speak_titles, bool):
            raise _invalid("speak_titles must be true or false")
        return cls(values["sentence"], values["paragraph"], values["chapter"], speak_titles, dict(lexicon))

    def as_dict(self) -> dict[str, Any]:
        return {
            "pauses": {
                "sentence": self.sentence_pause_s,
                "paragraph": self.paragraph_pause_s,
                "chapter": self.chapter_pause_s,
            },
            "speak_titles": self.speak_titles,
            "lexicon": dict(self.lexicon),
        }


def _invalid(message: str) -> RequestRejected:
    return RequestRejected(422, "invalid_book_options", message)


def detect_format(data: bytes, filename: str | None = None, declared: str | None = None) -> str:
    """The source's format: as declared, else an EPUB by its zip ``mimetype`` entry, else by the
    file's extension, else Markdown when it has a heading line, else plain text."""
    if declared:
        if declared not in SOURCE_FORMATS:
            raise RequestRejected(422, "unsupported_source_format", f"source format must be one of {SOURCE_FORMATS}")
        return declared
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                if archive.read("mimetype").strip() == b"application/epub+zip":
                    return "epub"
        except (zipfile.BadZipFile, KeyError):
            pass
        raise RequestRejected(415, "unsupported_source_format", "a zip file that is not an EPUB")
    name = (filename or "").lower()
    if name.endswith((".md", ".markdown")):
        return "markdown"
    if name.endswith(".txt"):
        return "text"
    head = data[:65536].decode("utf-8", "replace")
    if any(line.startswith("#") and line.lstrip("#").startswith(" ") for line in head.splitlines()):
        return "markdown"
    return "text"


def source_object_key(tenant_id: uuid.UUID, sha256: str, source_format: str) -> str:
    """Content-addressed: the same book submitted twice is one object."""
    return f"tenants/{tenant_id}/sources/{sha256[:2]}/{sha256}{SOURCE_EXTENSIONS[source_format]}"


@dataclass(frozen=True)
class BookRequest:
    source: bytes
    voice_id: uuid.UUID
    filename: str | None = None
    source_format: str | None = None  # None: detected
    project: str | None = None  # None: the file's name without extension
    language: str = "auto"
    output_format: str = "mp3"
    sample_rate: int | None = None
    split_method: str = "sentences"
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    schedule_every_s: int | None = None

    def project_name(self) -> str:
        if self.project:
            return self.project[:200]
        stem = (self.filename or "book").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return stem[:200] or "book"

    def fingerprint(self, source_sha: str) -> str:
        material = {**asdict(self), "source": source_sha, "voice_id": str(self.voice_id)}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _check(request: BookRequest, settings: Settings) -> int:
    if not request.source.strip():
        raise RequestRejected(422, "empty_text", "the book is empty")
    if len(request.source) > settings.max_book_bytes:
        raise RequestRejected(413, "book_too_large", f"the book is larger than {settings.max_book_bytes} bytes")
    if request.language not in LANGUAGES:
        raise RequestRejected(422, "unsupported_language", f"language must be one of {LANGUAGES}")
    if request.output_format not in OUTPUT_FORMATS:
        raise RequestRejected(422, "unsupported_format", f"format must be one of {OUTPUT_FORMATS}")
    if request.split_method not in SPLIT_METHODS:
        raise RequestRejected(422, "unsupported_split", f"split must be one of {SPLIT_METHODS}")
    if request.schedule_every_s is not None and request.schedule_every_s < 60:
        raise RequestRejected(422, "invalid_schedule", "schedule_every_s must be at least 60")
    allowed = FORMAT_RATES.get(request.output_format, SAMPLE_RATES)
    rate = request.sample_rate or (NATIVE_RATE if NATIVE_RATE in allowed else max(allowed))
    if rate not in allowed:
        raise RequestRejected(
            422, "sample_rate_unsupported", f"{request.output_format} carries {', '.join(map(str, allowed))} Hz"
        )
    return rate


def submit_book(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    request: BookRequest,
    idempotency_key: str | None = None,
    caller: Identity | None = None,
) -> tuple[Job, bool]:
    """Upsert the project, supersede its unfinished render, admit the job for ``caller`` (default:
    the tenant; ``jobs.limits.admit_job``), store the source and queue the job. Returns (job,
    created); a repeated idempotency key returns the first job."""
    settings = runtime.settings
    sample_rate = _check(request, settings)
    options = BookOptions.from_dict(request.options, settings)
    params = SynthesisParams.from_dict(request.params).as_dict()
    source_format = detect_format(request.source, request.filename, request.source_format)
    source_sha = hashlib.sha256(request.source).hexdigest()
    fingerprint = request.fingerprint(source_sha)
    if idempotency_key:
        with runtime.transaction() as session:
            existing = job_for_idempotency_key(session, tenant_id, idempotency_key)
            if existing is not None:
                return replay(existing, fingerprint), False
    source_key = source_object_key(tenant_id, source_sha, source_format)
    characters = book_characters(request.source, source_format)
    try:
        with runtime.transaction() as session:
            voice = _usable_voice(session, tenant_id, request.voice_id)
            project = session.scalar(
                select(Project).where(Project.tenant_id == tenant_id, Project.name == request.project_name())
            )
            if project is None:
                project = Project(tenant_id=tenant_id, name=request.project_name(), params={}, options={})
                session.add(project)
            project.voice_id = voice.id
            project.language = request.language
            project.output_format = request.output_format
            project.params = params
            project.options = options.as_dict()
            project.source_key = source_key
            project.source_format = source_format
            if request.schedule_every_s is not None:
                project.schedule_every_s = request.schedule_every_s
            if project.schedule_every_s:
                project.next_run_at = utcnow() + _seconds(project.schedule_every_s)
            project.updated_at = utcnow()
            session.flush()
            job = create_project_job(
                session,
                runtime,
                project,
                sample_rate=sample_rate,
                split_method=request.split_method,
                callback_url=request.callback_url,
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
                caller=caller or Identity(tenant_id),
                characters=characters,
            )
            # Stored once admitted (a refused book leaves no object), before the commit that
            # lets a worker plan it.
            runtime.storage.put(source_key, request.source, "application/octet-stream")
        return job, True
    except IntegrityError:
        existing = race_winner(runtime, tenant_id, idempotency_key)
        if existing is None:
            raise
        return replay(existing, fingerprint), False


def create_project_job(
    session: Any,
    runtime: Runtime,
    project: Project,
    *,
    sample_rate: int | None = None,
    split_method: str = "sentences",
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    caller: Identity | None = None,
    characters: int | None = None,
) -> Job:
    """A render of the project as it stands now; its unfinished render is cancelled first.

    With ``caller`` (a client asked for it) the job is admitted by ``jobs.limits.admit_job``
    after the superseded render stopped counting, charged ``characters`` (default: those of the
    stored source). Scheduled and stale re-renders (beat) pass no caller."""
    if project.source_key is None or project.source_format is None:
        raise RequestRejected(409, "project_has_no_source", f"project {project.name!r} has no source yet")
    lifecycle.supersede_project_jobs(session, runtime, project.id)
    if caller is not None:
        from jobs.limits import admit_job

        if characters is None:
            characters = source_characters(runtime, project.source_key, project.source_format)
        admit_job(runtime, session, caller, characters, callback_url)
    allowed = FORMAT_RATES.get(project.output_format, SAMPLE_RATES)
    voice = session.get(Voice, project.voice_id)
    model = models.voice_model(session, runtime.settings, voice) if voice is not None else None
    job = lifecycle.create_job(
        session,
        runtime,
        tenant_id=project.tenant_id,
        voice_id=project.voice_id,
        project_id=project.id,
        text="",
        source_key=project.source_key,
        source_format=project.source_format,
        book=dict(project.options),
        language=project.language,
        split_method=split_method,
        params=dict(project.params),
        output_format=project.output_format,
        sample_rate=sample_rate or (NATIVE_RATE if NATIVE_RATE in allowed else max(allowed)),
        callback_url=callback_url,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        **(models.ModelRef.of(model).job_columns() if model is not None else {}),
    )
    project.last_job_id = job.id
    return job


def book_characters(data: bytes, source_format: str) -> int:
    """The characters a book is charged for against the tenant's limits, counted without parsing
    its chapters (that happens on the gpt queue): a text or Markdown source's characters, markup
    included; an EPUB's text in its (X)HTML documents. An upper bound on what is spoken."""
    if source_format != "epub":
        return len(data.decode("utf-8", "replace"))
    import lxml.html
    from lxml import etree

    total = 0
    budget = EPUB_READ_BUDGET
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            for info in archive.infolist():
                if not info.filename.lower().endswith((".xhtml", ".html", ".htm")) or budget <= 0:
                    continue
                with archive.open(info) as member:
                    content = member.read(budget)  # a zip bomb stops at the budget
                budget -= len(content)
                if content.strip():
                    total += len(lxml.html.fromstring(content).text_content())
    except (zipfile.BadZipFile, ValueError, OSError, etree.LxmlError):
        return len(data)  # unreadable here: the planner will say why; charge its size
    return total


_SOURCE_CHARACTERS: dict[str, int] = {}


def source_characters(runtime: Runtime, source_key: str, source_format: str) -> int:
    """``book_characters`` of a stored source. Source keys are content addresses, so the count
    of a key never changes and is kept (a few hundred entries per process at most)."""
    found = _SOURCE_CHARACTERS.get(source_key)
    if found is None:
        found = book_characters(runtime.storage.get(source_key), source_format)
        if len(_SOURCE_CHARACTERS) >= 1024:
            _SOURCE_CHARACTERS.clear()
        _SOURCE_CHARACTERS[source_key] = found
    return found


def _seconds(value: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _usable_voice(session: Any, tenant_id: uuid.UUID, voice_id: uuid.UUID) -> Voice:
    voice: Voice | None = session.get(Voice, voice_id)
    if voice is None or voice.tenant_id != tenant_id or voice.status == VoiceStatus.DELETED.value:
        raise RequestRejected(404, "voice_not_found", f"no voice {voice_id}")
    if voice.status == VoiceStatus.FAILED.value:
        raise RequestRejected(409, "voice_unavailable", f"voice {voice.id} failed processing: {voice.failure_code}")
    return voice

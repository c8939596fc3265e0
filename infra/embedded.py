"""The embedded default: one process, SQLite and a local folder, every stage run in-process by
the same task code the distributed pools run (Celery in eager mode)."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from infra.progress import ProgressBar

from jobs.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
FORMAT_EXTENSIONS = {"wav": "wav", "wav24": "wav", "flac": "flac", "mp3": "mp3", "opus": "ogg", "m4a": "m4a"}


def embedded_settings(home: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {"mode": "embedded", **{k: v for k, v in overrides.items() if v is not None}}
    if home is not None:
        values["home"] = home
    settings = Settings(**values)  # type: ignore[arg-type]
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def render(
    text_path: str,
    voice: str | Path,
    transcript: str | None,
    language: str,
    out_dir: Path,
    output_format: str = "wav",
    home: Path | None = None,
    engine: str | None = None,
    models_dir: Path | None = None,
    project: str | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = True,
    quality_gate: str | None = None,
) -> int:
    """Render a book (text, Markdown or EPUB; ``-`` reads standard input) in a voice — a
    reference audio file, or the name or id of a voice stored here — and copy its files to
    ``out_dir``. Rendering it again reuses every segment already rendered."""
    from db.migrate import upgrade
    from jobs import lifecycle
    from jobs.books import BookRequest, submit_book
    from jobs.runtime import Runtime
    from jobs.submission import RequestRejected

    settings = embedded_settings(home, engine=engine, models_dir=models_dir, quality_gate=quality_gate)
    data = sys.stdin.buffer.read() if text_path == "-" else Path(text_path).read_bytes()
    filename = "speech.txt" if text_path == "-" else Path(text_path).name
    upgrade(settings.db_url)
    runtime = Runtime(settings)
    runtime.celery  # builds the eager app and registers every task
    started = time.perf_counter()
    try:
        with runtime.transaction() as session:
            tenant_id = lifecycle.default_tenant(session).id
        voice_id = _voice(runtime, tenant_id, voice, transcript, language)
        if voice_id is None:
            return 1
        key = f"cli-{uuid.uuid4()}"
        request = BookRequest(
            source=data,
            voice_id=voice_id,
            filename=filename,
            project=project,
            language=language,
            output_format=output_format,
            options=options or {},
        )
        # Eager mode renders inside the submission; a thread runs it while this one draws the
        # bar from the rows (found by the idempotency key before the job id is returned).
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["job"] = submit_book(runtime, tenant_id, request, idempotency_key=key)[0]
            except BaseException as exc:  # reported by the main thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        bar = ProgressBar() if progress else None
        while worker.is_alive():
            worker.join(0.2)
            if bar is not None:
                state = _job_state(runtime, tenant_id, key)
                if state:
                    bar.update(state)
        if bar is not None:
            state = _job_state(runtime, tenant_id, key)
            if state:
                bar.update(state)
            bar.close()
        if "error" in outcome:
            raise outcome["error"]
        job_id = outcome["job"].id
    except RequestRejected as exc:
        print(f"rejected ({exc.code}): {exc.message}", file=sys.stderr)
        return 2
    state = _job_state(runtime, tenant_id, key) or {}
    if state.get("status") != "succeeded":
        print(f"job {job_id} {state.get('status')}: {state.get('error')}", file=sys.stderr)
        return 1
    stem = Path(text_path).stem if text_path != "-" else "speech"
    written = copy_outputs(runtime, job_id, out_dir, stem)
    total = state["progress"]["segments_total"]
    reused = state["progress"]["segments_reused"]
    print(
        f"rendered {total} segments ({reused} reused) in {time.perf_counter() - started:.1f} s → {out_dir}"
    )
    for kind, path in written.items():
        print(f"  {kind:12s} {path}")
    if settings.quality_gate != "off":
        with runtime.transaction() as session:
            summary = lifecycle.quality_summary(session, job_id)
        print(f"quality gate ({settings.quality_gate}): {gate_verdict(summary, total)}")
    return 0


def gate_verdict(summary: Any, total: int) -> str:
    """One line on the job's final renders, reused ones included (``lifecycle.QualitySummary``)."""
    parts: list[str] = []
    failed = [i for i in summary.below_gate if i not in summary.unscored]
    if failed:
        parts.append(f"segments {', '.join(map(str, failed))} below the gate")
    if summary.unscored:
        parts.append(f"segments {', '.join(map(str, summary.unscored))} could not be scored")
    if summary.capped:
        parts.append(f"segments {', '.join(map(str, summary.capped))} hit the T2S token cap")
    if parts:
        return "; ".join(parts)
    if summary.passed == total:
        return "every segment passed"
    return f"{summary.passed} of {total} segments passed; {total - summary.scored} have no verdict"


def _voice(runtime: Any, tenant_id: Any, voice: str | Path, transcript: str | None, language: str) -> Any:
    """A voice id: a stored voice by name or id, or a reference file onboarded once (a file
    already onboarded with the same transcript is the same voice, so its renders are reused)."""
    from api_min.uploads import prepare_reference
    from db.models import Voice
    from jobs.voice_catalog import find_voice
    from jobs.submission import submit_voice

    path = Path(voice)
    if not path.is_file():
        with runtime.transaction() as session:
            found = find_voice(session, tenant_id, str(voice))
            if found is None:
                print(f"no voice named {voice!r} here, and no such file", file=sys.stderr)
                return None
            return found.id
    data = path.read_bytes()
    fingerprint = hashlib.sha256(data + (transcript or "").encode()).hexdigest()
    with runtime.transaction() as session:
        from sqlalchemy import select

        for known in session.scalars(
            select(Voice).where(Voice.tenant_id == tenant_id, Voice.name == path.stem, Voice.status == "ready")
        ):
            if (known.analysis or {}).get("source_sha256") == fingerprint:
                return known.id
    reference = prepare_reference(data, runtime.settings, transcript)
    created = submit_voice(
        runtime,
        tenant_id,
        path.stem,
        _voice_language(language),
        reference.transcript,
        reference.payload,
        {**reference.analysis, "source_sha256": fingerprint},
    )
    with runtime.transaction() as session:
        processed = session.get(Voice, created.id)
        assert processed is not None
        if processed.status != "ready":
            print(f"voice rejected: {processed.failure_code}: {processed.failure_message}", file=sys.stderr)
            return None
        return processed.id


def _job_state(runtime: Any, tenant_id: Any, idempotency_key: str) -> dict[str, Any] | None:
    from sqlalchemy import select

    from api_min.routes.jobs import job_out
    from db.models import Job

    with runtime.transaction() as session:
        job_id = session.scalar(
            select(Job.id).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
        )
    if job_id is None:
        return None
    return job_out(runtime, job_id, tenant_id).model_dump(mode="json")


OUTPUT_NAMES = {"m4b": "{stem}.m4b", "mp3": "{stem}.mp3", "manifest": "{stem}.manifest.json",
                "srt": "{stem}.srt", "vtt": "{stem}.vtt"}


class UnsafeOutputName(ValueError):
    """A file name, made from a kind and a storage key, that would not stay a plain file of the
    output folder (``voxmill submit`` builds it from what a server sent)."""


def output_name(kind: str, key: str, stem: str) -> str:
    """Where a job's file goes in the output folder: a plain name, or ``chapters/<name>``. A key
    with an empty, ``.`` or ``..`` part, or a backslash, is refused (``UnsafeOutputName``)."""
    if "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise UnsafeOutputName(f"the storage key {key!r} is not a plain relative path")
    if kind == "audio":
        return f"{stem}.{key.rsplit('.', 1)[-1]}"
    if kind.startswith("chapter-"):
        return f"chapters/{key.rsplit('/', 1)[-1]}"
    template = OUTPUT_NAMES.get(kind)
    return template.format(stem=stem) if template else key.rsplit("/", 1)[-1]


def output_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name`` when ``name`` is a plain file name or ``chapters/<file name>`` and the
    path stays inside ``out_dir`` (symbolic links resolved); else ``UnsafeOutputName``."""
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "chapters":
        leaf = parts[1]
    elif len(parts) == 1:
        leaf = parts[0]
    else:
        raise UnsafeOutputName(f"{name!r} is neither a file name nor chapters/<file name>")
    if leaf in ("", ".", "..") or "\\" in leaf or any(ord(c) < 0x20 or c == "\x7f" for c in leaf):
        raise UnsafeOutputName(f"{name!r} is not a plain file name")
    root = out_dir.resolve()
    target = (out_dir / name).resolve()
    if target.parent not in (root, root / "chapters"):
        raise UnsafeOutputName(f"{name!r} leads outside {out_dir}")
    return out_dir / name


def copy_outputs(runtime: Any, job_id: Any, out_dir: Path, stem: str) -> dict[str, Path]:
    from sqlalchemy import select

    from db.models import Artifact

    with runtime.transaction() as session:
        artifacts = session.execute(
            select(Artifact.kind, Artifact.storage_key).where(Artifact.job_id == job_id, Artifact.segment_id.is_(None))
        ).all()
    written: dict[str, Path] = {}
    for kind, key in sorted(artifacts):
        target = output_path(out_dir, output_name(kind, key, stem))
        if kind == "audio" and target.suffix == ".mp3":
            continue  # the same object as the book's MP3
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(runtime.storage.get(key))
        written[kind] = target
    return written


def _voice_language(language: str) -> str:
    return "en" if language == "auto" else language


def demo(tiny: bool, out_dir: Path, home: Path | None = None) -> int:
    from workers.assets import TINY_READY_MARK, MissingModels, ensure_models, make_tiny

    voice = EXAMPLES / "voice" / "sample.wav"
    transcript = (EXAMPLES / "voice" / "sample.txt").read_text(encoding="utf-8").strip()
    chapter = EXAMPLES / "chapter.md"
    settings = embedded_settings(home)
    if tiny:
        models = settings.home / "models-tiny"
        ready = models / "READY"
        if not ready.exists() or TINY_READY_MARK not in ready.read_text(encoding="utf-8"):
            make_tiny(models)  # absent, or made before EOS was reachable (renders ran to the cap)
        print(f"tiny random models in {models}: the audio is noise, but every stage runs for real")
        print("quality gate: scores recorded, no re-renders (noise from random weights never passes)")
    else:
        models = settings.models_dir or settings.home / "models"
        try:
            ensure_models(models)
        except MissingModels as exc:
            print(str(exc), file=sys.stderr)
            print("\nTo see the whole pipeline run without them: voxmill demo --tiny", file=sys.stderr)
            return 3
    return render(
        str(chapter),
        voice,
        transcript,
        "en",
        out_dir,
        home=settings.home,
        models_dir=models,
        quality_gate="score" if tiny else None,
    )

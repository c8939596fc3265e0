"""Models as data: a model is a named GPT + SoVITS pair of files with a generation and the sha256
of each file, registered for one tenant or for the whole deployment (``tenant_id`` None). A voice
may name its model; ``VOXMILL_DEFAULT_MODEL`` names the deployment's; with neither, the files
under ``VOXMILL_MODELS_DIR`` render as before.

A job copies the model it runs on into its row (``ModelRef.job_columns``) at submission, and the
model's name and sha256s enter every content key (``ModelRef.label``), so switching a voice's
model re-renders exactly the segments it changes, and switching back finds them cached again.

The api_v2 drop-in's ``/set_gpt_weights`` and ``/set_sovits_weights`` choose a registered model's
GPT or SoVITS half for the calling API key only (``ModelSelection``)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, Model, ModelSelection, Voice, VoiceFeatureSet, utcnow
from jobs.settings import Settings
from jobs.states import VoiceStatus

NAME_CHARS = 200


class ModelError(ValueError):
    """A model operation that cannot be done; ``code`` is the API's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ModelRef:
    """The files one job renders with (a registered model, or two halves of two registered
    models chosen through the api_v2 drop-in)."""

    name: str
    generation: str
    gpt_path: str
    sovits_path: str
    gpt_sha256: str
    sovits_sha256: str

    @property
    def label(self) -> str:
        """What enters content keys: the name and both checksums."""
        return f"model:{self.name}|gpt:{self.gpt_sha256}|sovits:{self.sovits_sha256}"

    @property
    def version(self) -> str:
        """A short version for ``jobs.model_version`` and response headers."""
        return f"gsv-{self.generation}:" + hashlib.sha256(self.label.encode()).hexdigest()[:12]

    def job_columns(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_generation": self.generation,
            "model_gpt_sha256": self.gpt_sha256,
            "model_sovits_sha256": self.sovits_sha256,
            "model_gpt_path": self.gpt_path,
            "model_sovits_path": self.sovits_path,
        }

    @classmethod
    def of(cls, model: Model) -> "ModelRef":
        return cls(
            model.name, model.generation, model.gpt_path, model.sovits_path, model.gpt_sha256, model.sovits_sha256
        )

    @classmethod
    def pair(cls, gpt: Model, sovits: Model) -> "ModelRef":
        """GPT weights of one model with the SoVITS weights of another (api_v2 lets a client
        choose the two independently); the SoVITS half decides the generation."""
        if gpt.id == sovits.id:
            return cls.of(gpt)
        return cls(
            f"{gpt.name}+{sovits.name}",
            sovits.generation,
            gpt.gpt_path,
            sovits.sovits_path,
            gpt.gpt_sha256,
            sovits.sovits_sha256,
        )

    @classmethod
    def from_job(cls, job: Job) -> "ModelRef | None":
        if job.model_name is None:
            return None
        assert job.model_generation and job.model_gpt_path and job.model_sovits_path
        assert job.model_gpt_sha256 and job.model_sovits_sha256
        return cls(
            job.model_name,
            job.model_generation,
            job.model_gpt_path,
            job.model_sovits_path,
            job.model_gpt_sha256,
            job.model_sovits_sha256,
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _storable(value: str) -> bool:
    """PostgreSQL refuses NUL; every column is UTF-8 (a lone surrogate cannot be encoded)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_CHARS or "/" in name or "+" in name or not _storable(name):
        raise ModelError(422, "invalid_model_name", f"a model name is 1–{NAME_CHARS} characters, without '/' or '+'")
    return name


def _scope(tenant_id: uuid.UUID | None) -> Any:
    return Model.tenant_id.is_(None) if tenant_id is None else Model.tenant_id == tenant_id


def add_model(
    session: Session,
    settings: Settings,
    name: str,
    gpt: Path,
    sovits: Path,
    tenant_id: uuid.UUID | None = None,
    under: Path | None = None,
) -> Model:
    """Register a pair: both files must exist (inside ``under`` when given: the admin API keeps
    tenants to the models folder), the SoVITS file's generation is read from its header and
    weights, and each file's sha256 is recorded."""
    from jobs.engine import detect_generation

    name = _check_name(name)
    files = []
    for what, path in (("gpt", gpt), ("sovits", sovits)):
        try:
            if not _storable(str(path)):
                raise ValueError("not storable text")
            resolved = path.expanduser().resolve()
        except (ValueError, OSError, RuntimeError) as exc:
            raise ModelError(422, "model_missing", f"the {what} path is not a usable file name ({exc})") from None
        if under is not None and not resolved.is_relative_to(under.resolve()):
            raise ModelError(422, "model_path_outside", f"the {what} file must lie under {under}")
        try:
            present = resolved.is_file()
        except OSError:  # a name too long for the filesystem, a permission error
            present = False
        if not present:
            raise ModelError(422, "model_missing", f"the {what} file {path} does not exist")
        files.append(resolved)
    gpt_file, sovits_file = files
    if session.scalar(select(Model.id).where(_scope(tenant_id), Model.name == name)) is not None:
        raise ModelError(409, "model_exists", f"a model named {name!r} is already registered")
    try:
        generation = detect_generation(settings, gpt_file, sovits_file)
    except Exception as exc:  # any refusal of a file: unsupported version, not a checkpoint
        raise ModelError(422, "model_invalid", str(exc)) from None
    model = Model(
        tenant_id=tenant_id,
        name=name,
        generation=generation,
        gpt_path=str(gpt_file),
        sovits_path=str(sovits_file),
        gpt_sha256=file_sha256(gpt_file),
        sovits_sha256=file_sha256(sovits_file),
    )
    try:
        with session.begin_nested():
            session.add(model)
    except IntegrityError:
        raise ModelError(409, "model_exists", f"a model named {name!r} is already registered") from None
    return model


def visible_models(session: Session, tenant_id: uuid.UUID | None) -> list[Model]:
    """A tenant's own models and the deployment's (``tenant_id`` None: the deployment's only)."""
    clause = Model.tenant_id.is_(None) if tenant_id is None else or_(Model.tenant_id.is_(None), Model.tenant_id == tenant_id)
    return list(session.scalars(select(Model).where(clause).order_by(Model.tenant_id.is_(None), Model.name)))


def all_models(session: Session) -> list[Model]:
    return list(session.scalars(select(Model).order_by(Model.tenant_id, Model.name)))


def find_model(session: Session, tenant_id: uuid.UUID | None, ref: str) -> Model | None:
    """The model a tenant means by ``ref``: its own of that name, else the deployment's; a
    registered file path also names its model (api_v2 clients send paths)."""
    if not _storable(ref):
        return None
    for scope in ([tenant_id] if tenant_id is not None else []) + [None]:
        found = session.scalar(select(Model).where(_scope(scope), Model.name == ref))
        if found is not None:
            return found
    by_path = session.scalars(
        select(Model)
        .where(
            or_(Model.tenant_id.is_(None), Model.tenant_id == tenant_id) if tenant_id else Model.tenant_id.is_(None),
            or_(Model.gpt_path == ref, Model.sovits_path == ref),
        )
        .order_by(Model.tenant_id.is_(None))
    ).first()
    return by_path


def remove_model(session: Session, tenant_id: uuid.UUID | None, name: str) -> None:
    """Remove one of the scope's models; refused while a voice names it. Jobs keep their copy of
    what they ran on; a key's api_v2 choice of it is cleared."""
    model = session.scalar(select(Model).where(_scope(tenant_id), Model.name == name)) if _storable(name) else None
    if model is None:
        raise ModelError(404, "model_not_found", f"no model named {name!r}")
    voices = session.scalars(
        select(Voice.name).where(Voice.model_id == model.id, Voice.status != VoiceStatus.DELETED.value).limit(5)
    ).all()
    if voices:
        raise ModelError(409, "model_in_use", f"model {name!r} is used by voices: {', '.join(voices)}")
    session.execute(update(Voice).where(Voice.model_id == model.id).values(model_id=None))
    session.execute(update(ModelSelection).where(ModelSelection.gpt_model_id == model.id).values(gpt_model_id=None))
    session.execute(
        update(ModelSelection).where(ModelSelection.sovits_model_id == model.id).values(sovits_model_id=None)
    )
    session.execute(delete(Model).where(Model.id == model.id))


def default_model(session: Session, settings: Settings, tenant_id: uuid.UUID) -> Model | None:
    if not settings.default_model:
        return None
    return find_model(session, tenant_id, settings.default_model)


def voice_model(session: Session, settings: Settings, voice: Voice) -> Model | None:
    """The model a voice speaks with: its own, else the deployment default (None: the files
    under VOXMILL_MODELS_DIR)."""
    if voice.model_id is not None:
        return session.get(Model, voice.model_id)
    return default_model(session, settings, voice.tenant_id)


# --------------------------------------------------------------------------- api_v2 selections


def selector(tenant_id: uuid.UUID, key_id: uuid.UUID | None) -> str:
    return str(key_id) if key_id is not None else f"tenant:{tenant_id}"


def select_weights(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID | None, half: str, ref: str) -> Model:
    """Choose the GPT (``half`` "gpt") or SoVITS half of a registered model for one API key."""
    model = find_model(session, tenant_id, ref)
    if model is None:
        raise ModelError(400, "model_not_found", f"{ref!r} is not a registered model name or file")
    key = selector(tenant_id, key_id)
    row = session.get(ModelSelection, key)
    if row is None:
        row = ModelSelection(selector=key, tenant_id=tenant_id)
        session.add(row)
    if half == "gpt":
        row.gpt_model_id = model.id
    else:
        row.sovits_model_id = model.id
    row.updated_at = utcnow()
    return model


def resolve(
    session: Session,
    settings: Settings,
    voice: Voice,
    model_name: str | None = None,
    selection: str | None = None,
) -> ModelRef | None:
    """The model a new job of ``voice`` runs on: a model named in the request, else the voice's
    own or the deployment default, with either half replaced by the api_v2 choice of the key
    (``selection``)."""
    if model_name is not None:
        named = find_model(session, voice.tenant_id, model_name)
        if named is None:
            raise ModelError(422, "model_not_found", f"no model named {model_name!r}")
        base: Model | None = named
    else:
        base = voice_model(session, settings, voice)
    chosen = session.get(ModelSelection, selection) if selection is not None else None
    gpt = session.get(Model, chosen.gpt_model_id) if chosen and chosen.gpt_model_id else base
    sovits = session.get(Model, chosen.sovits_model_id) if chosen and chosen.sovits_model_id else base
    if gpt is None and sovits is None:
        return None
    if gpt is None or sovits is None:
        raise ModelError(
            400,
            "model_incomplete",
            "only one half of a model is chosen and no default model is registered: "
            "call both /set_gpt_weights and /set_sovits_weights",
        )
    if gpt.id != sovits.id and (gpt.generation == "v1") != (sovits.generation == "v1"):
        # v1 speaks another phone table (322 symbols, a 512-row T2S embedding) than v2 and later.
        raise ModelError(
            400,
            "model_mismatch",
            f"the GPT weights of {gpt.name} ({gpt.generation}) cannot drive the SoVITS weights of "
            f"{sovits.name} ({sovits.generation}): v1 and later generations use other phone tables",
        )
    return ModelRef.pair(gpt, sovits)


# --------------------------------------------------------------------------- voice features


def features_key(session: Session, voice_id: uuid.UUID, sovits_sha256: str) -> str | None:
    key: str | None = session.scalar(
        select(VoiceFeatureSet.features_key).where(
            VoiceFeatureSet.voice_id == voice_id, VoiceFeatureSet.sovits_sha256 == sovits_sha256
        )
    )
    return key


def record_features(session: Session, voice_id: uuid.UUID, ref: ModelRef, key: str) -> None:
    """Insert the row once; a concurrent computation of the same features wrote the same key."""
    if features_key(session, voice_id, ref.sovits_sha256) is not None:
        return
    try:
        with session.begin_nested():
            session.add(
                VoiceFeatureSet(
                    voice_id=voice_id, generation=ref.generation, sovits_sha256=ref.sovits_sha256, features_key=key
                )
            )
    except IntegrityError:
        pass


def feature_keys(session: Session, voice_id: uuid.UUID) -> list[str]:
    return list(session.scalars(select(VoiceFeatureSet.features_key).where(VoiceFeatureSet.voice_id == voice_id)))


def features_object_name(ref: ModelRef) -> str:
    return f"features-{ref.generation}-{ref.sovits_sha256[:16]}.npz"

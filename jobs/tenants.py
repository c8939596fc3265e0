"""Tenants and their API keys. A key is ``vxm_<prefix>_<secret>``: the prefix is stored in clear
(people and logs name a key by it), the whole key only as its SHA-256. A key is 192 random bits,
so a fast hash is enough — nothing to brute-force — and it keeps authentication to one indexed
lookup and a constant-time compare per request. Revocation takes effect on the next request:
nothing is cached.

Every voice, job and artifact row names its tenant; the API answers another tenant's ids with
404, never 403, so ids do not leak across tenants."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ApiKey, Tenant, utcnow

KEY_SCHEME = "vxm"
PREFIX_CHARS = 10
# last_used_at is written at most this often per key: a busy key must not turn reads into writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TenantError(ValueError):
    """A tenant or key operation that cannot be done (unknown name, duplicate, …)."""


@dataclass(frozen=True)
class Identity:
    """Who a request acts for: the tenant, and the key it presented (None when auth is off)."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None = None
    key_prefix: str | None = None


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    name: str
    tenant: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_key() -> tuple[str, str]:
    """(prefix, full key). The prefix is lower-case alphanumeric so it survives any copy-paste."""
    alphabet = "abcdefghijkmnopqrstuvwxyz23456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(PREFIX_CHARS))
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(24)}"


def _prefix_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != PREFIX_CHARS or not parts[2]:
        return None
    return parts[1]


def create_tenant(session: Session, name: str, max_queued_jobs: int | None = None) -> Tenant:
    name = name.strip()
    if not name or len(name) > 200:
        raise TenantError("a tenant name is 1–200 characters")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name, max_queued_jobs=max_queued_jobs)
    session.add(tenant)
    session.flush()
    return tenant


def tenant_by_name(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise TenantError(f"no tenant {name!r} (create it with: voxmill tenants create {name})")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def create_key(session: Session, tenant_id: uuid.UUID, name: str = "") -> tuple[ApiKey, str]:
    """A new key for the tenant: the row, and the key itself — shown once, never stored."""
    prefix, key = _new_key()
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix, key = _new_key()
    row = ApiKey(tenant_id=tenant_id, name=name[:200], prefix=prefix, key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, tenant_id: uuid.UUID | None = None) -> list[KeyInfo]:
    query = select(ApiKey, Tenant.name).join(Tenant, ApiKey.tenant_id == Tenant.id).order_by(ApiKey.created_at)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return [
        KeyInfo(k.prefix, k.name, tenant_name, k.created_at, k.last_used_at, k.revoked_at)
        for k, tenant_name in session.execute(query)
    ]


def revoke_key(session: Session, prefix: str) -> bool:
    """Revoke the key with this prefix; False when there is none or it was already revoked."""
    changed = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix.removeprefix(f"{KEY_SCHEME}_"), ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(changed == 1)


def identify(session: Session, authorization_header: str | None) -> Identity | None:
    """The identity behind ``Authorization: Bearer <key>``, or None for a missing, malformed,
    unknown or revoked key (the caller answers all of them alike: 401)."""
    if not authorization_header:
        return None
    scheme, _, key = authorization_header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    prefix = _prefix_of(key)
    if prefix is None:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)) or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(
            update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now).execution_options(synchronize_session=False)
        )
    return Identity(row.tenant_id, row.id, row.prefix)


def authenticate(session: Session, authorization_header: str | None) -> uuid.UUID | None:
    """The tenant id behind the header, or None."""
    identity = identify(session, authorization_header)
    return identity.tenant_id if identity else None

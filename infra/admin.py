"""``voxmill tenants …`` and ``voxmill keys …``: the accounts behind the API's bearer keys. A key
is printed once, when it is created; the database keeps only its hash and visible prefix."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any


def _runtime() -> Any:
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    return Runtime(Settings())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from jobs.tenants import TenantError, create_tenant

    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            tenant = create_tenant(session, args.name, args.max_queued_jobs)
            print(f"tenant {tenant.name} ({tenant.id})")
    except TenantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from jobs.tenants import list_tenants

    runtime = _runtime()
    default_cap = runtime.settings.max_queued_jobs_per_tenant
    with runtime.transaction() as session:
        for tenant in list_tenants(session):
            cap = tenant.max_queued_jobs if tenant.max_queued_jobs is not None else f"{default_cap} (default)"
            print(f"{tenant.name}\t{tenant.id}\tmax queued jobs: {cap}")
    runtime.close()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from jobs.tenants import TenantError, create_key, tenant_by_name

    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            tenant = tenant_by_name(session, args.tenant)
            row, key = create_key(session, tenant.id, args.name or "")
            prefix = row.prefix
    except TenantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print(f"created key {prefix} for tenant {args.tenant}")
    print("store it now, it is not shown again:")
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from jobs.tenants import TenantError, list_keys, tenant_by_name

    runtime = _runtime()
    try:
        with runtime.transaction() as session:
            tenant_id = tenant_by_name(session, args.tenant).id if args.tenant else None
            keys = list_keys(session, tenant_id)
    except TenantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print("prefix\ttenant\tname\tcreated\tlast used\tstatus")
    for k in keys:
        status = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
        print(f"{k.prefix}\t{k.tenant}\t{k.name or '-'}\t{_when(k.created_at)}\t{_when(k.last_used_at)}\t{status}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from jobs.tenants import revoke_key

    runtime = _runtime()
    with runtime.transaction() as session:
        revoked = revoke_key(session, args.prefix)
    runtime.close()
    if not revoked:
        print(f"error: no active key with prefix {args.prefix}", file=sys.stderr)
        return 1
    print(f"revoked key {args.prefix}; requests with it now get 401")
    return 0


def add_parsers(sub: Any) -> None:
    tenants = sub.add_parser("tenants", help="tenants (accounts)").add_subparsers(dest="tenants_command", required=True)
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--max-queued-jobs", type=int, help="cap on unfinished jobs (default: the setting)")
    create.set_defaults(func=cmd_tenants_create)
    tenants.add_parser("list", help="list tenants").set_defaults(func=cmd_tenants_list)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    key_create = keys.add_parser("create", help="create an API key (printed once)")
    key_create.add_argument("--tenant", required=True)
    key_create.add_argument("--name", help="a label for people, e.g. 'ci' or 'alice laptop'")
    key_create.set_defaults(func=cmd_keys_create)
    key_list = keys.add_parser("list", help="list keys (prefix, tenant, last use, revoked)")
    key_list.add_argument("--tenant")
    key_list.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    revoke.set_defaults(func=cmd_keys_revoke)

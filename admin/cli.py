"""The admin CLI. It uses the app's own settings and talks to storage directly, so it works on an
empty store (bootstrapping the first ``keys:admin`` key) and when the app is down.

Output is for people by default; ``--json`` prints one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.access.key_requests import MAX_DAYS, SCOPES, KeyChange, NewKey
from shared.config.settings import Settings
from shared.foundation.errors import KeystewardError
from shared.lifecycle.rekey import rekey
from shared.runtime import Runtime

Command = Callable[[argparse.Namespace, Runtime], Any]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        raise SystemExit(f"keysteward: --env-file {path}: no such file")
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise SystemExit(f"{path}:{number}: expected NAME=VALUE")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def keys_create(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    if args.all == bool(args.scope or args.resource):
        raise SystemExit("give either --all (a '*' key: every scope on every resource, the "
                         "bootstrap key) or --scope and --resource")  # fmt: skip
    scopes, resources = (list(SCOPES), ["*"]) if args.all else (args.scope, args.resource)
    if not scopes or not resources:
        raise SystemExit("give at least one --scope and one --resource (or --all)")
    request = NewKey(name=args.name, owner=args.owner or "", scopes=scopes,
                     resources=resources, expires_in_days=args.days)  # fmt: skip
    key, secret = rt.api_keys.create(request, actor=_actor())
    return {**key.public(), "key": secret}


def keys_list(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    return {"keys": [key.public() for key in rt.api_keys.list()]}


def keys_regenerate(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    key, secret = rt.api_keys.regenerate(args.id, actor=_actor())
    return {**key.public(), "key": secret}


def keys_update(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.resource:
        changes["resources"] = args.resource
    return rt.api_keys.update(args.id, KeyChange.parse(changes), actor=_actor()).public()


def keys_delete(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    rt.api_keys.delete(args.id, actor=_actor())
    return {"deleted": args.id}


def status(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    now = rt.clock.now()

    def days(when: datetime | None) -> float | None:
        return None if when is None else round((when - now).total_seconds() / 86400, 1)

    return {
        "connections": [
            {"resource": c.resource, "provider": c.provider, "status": c.status.value,
             "expires_at": c.access_expires_at.isoformat() if c.access_expires_at else None,
             "days_left": days(c.access_expires_at), "last_error": c.last_error}
            for c in rt.connections.all()
        ],
        "managed_pats": [
            {"id": p.id, "resource": f"{p.app}/{p.user_id}", "status": p.status.value,
             "rotation": p.rotation_step, "expires_at": p.valid_to.isoformat() if p.valid_to
             else None, "days_left": days(p.valid_to), "last_error": p.last_error,
             "rotation_refused": p.rotation_refused_message}
            for p in rt.managed_pats.all()
        ],
        "api_keys": [
            {"id": k.id, "name": k.name, "status": "expired" if k.expires_at <= now else "active",
             "expires_at": k.expires_at.isoformat(), "days_left": days(k.expires_at)}
            for k in rt.api_keys.list()
        ],
        "revocation_failures": [p.public() for p in rt.revoker.credentials.failures()],
        "misconfigured_apps": [m.public() for m in rt.app_health.misconfigured()],
    }  # fmt: skip


_RED, _YELLOW, _GREEN, _RESET = "\033[31m", "\033[33m", "\033[32m", "\033[0m"


def rekey_command(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    report = rekey(rt.store, dry_run=args.dry_run)
    return {"primary": rt.store.ring.primary if rt.store.ring else None, "dry_run": args.dry_run,
            "checked": report.checked, "resealed": report.resealed,
            "still_under_old_keys": report.old_kids}  # fmt: skip


def migrate_user_ids(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    return rt.user_ids.backfill().public()


def _print_migration(data: dict[str, Any]) -> None:
    if data["done_before"]:
        print("user ids were already migrated: nothing to do")
        return
    print(f"registered {data['registered']} user ids ({data['already_registered']} already were)")
    for c in data["collisions"]:
        print(f"case collision: '{c['shadowed']}' kept apart from '{c['kept']}' (reported, not "
              "merged: revocation by user reaches both)")  # fmt: skip
    for user_id in data["respelled"]:
        print(f"stored with whitespace or not NFC, reached by its clean form: {user_id!r}")
    for user_id in data["unreachable"]:
        print(f"no caller can name {user_id!r}: revoke it by app")


def _colour(text: str, state: str, days_left: float | None) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    if state in (
        "needs_reauth",
        "revoke_failed",
        "expired",
        "misconfigured",
        "revoked_upstream",
    ) or (days_left is not None and days_left < 1):
        return f"{_RED}{text}{_RESET}"
    if state in ("revoked", "creating") or (days_left is not None and days_left < 10):
        return f"{_YELLOW}{text}{_RESET}"
    return f"{_GREEN}{text}{_RESET}"


def _print_status(data: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str, float | None]] = []
    for c in data["connections"]:
        rows.append(
            ("connection", c["resource"], c["status"], c["expires_at"] or "-", c["days_left"])
        )
    for p in data["managed_pats"]:
        state = p["status"] + (f" (rotating: {p['rotation']})" if p["rotation"] else "")
        state += " (rotation refused by policy)" if p.get("rotation_refused") else ""
        rows.append(("managed PAT", f"{p['id']} {p['resource']}", state, p["expires_at"] or "-",
                     p["days_left"]))  # fmt: skip
    for k in data["api_keys"]:
        rows.append(("API key", f"{k['id']} {k['name']}", k["status"], k["expires_at"],
                     k["days_left"]))  # fmt: skip
    for f in data["revocation_failures"]:
        rows.append(("revocation", f["credential"], "revoke_failed", "-", None))
    for m in data["misconfigured_apps"]:
        code = f", {m['provider_code']}" if m["provider_code"] else ""
        rows.append(("app", f"{m['app']} ({m['error']}{code} since {m['since'][:16]})",
                     "misconfigured", "-", None))  # fmt: skip
    if not rows:
        print("nothing stored yet")
        return
    header = ("KIND", "WHAT", "STATUS", "EXPIRES", "DAYS")
    table = [(kind, what, state, expires[:16], "-" if left is None else f"{left:g}")
             for kind, what, state, expires, left in rows]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for (kind, what, state, expires, left), (_, _, _, _, number) in zip(table, rows, strict=True):
        cells = [
            kind.ljust(widths[0]),
            what.ljust(widths[1]),
            _colour(state.ljust(widths[2]), state.split()[0], number),
            expires.ljust(widths[3]),
            _colour(left.rjust(widths[4]), state, number),
        ]
        print("  ".join(cells))


def _print_key(data: dict[str, Any]) -> None:
    print(f"{data['name']}  (id {data['id']})")
    print(f"  owner      {data['owner'] or '-'}")
    print(f"  scopes     {', '.join(data['scopes'])}")
    print(f"  resources  {', '.join(data['resources'])}")
    print(f"  expires    {data['expires_at']}")
    if data.get("last_used_at"):
        print(f"  last used  {data['last_used_at']}")
    if "key" in data:
        print(f"\n  {data['key']}\n\n  This is the only time the key is shown: store it now.")


def _human(command: str, data: dict[str, Any]) -> None:
    if command == "migrate-user-ids":
        _print_migration(data)
    elif command == "rekey":
        verb = "would re-seal" if data["dry_run"] else "re-sealed"
        for table, checked in data["checked"].items():
            print(f"{table:<20} {checked:>6} rows checked, {verb} {data['resealed'][table]}")
        if data["dry_run"]:
            print(f"values under older keys: {data['still_under_old_keys'] or 'none'}")
        else:
            print(f"every sealed value is now under '{data['primary']}'")
    elif command == "status":
        _print_status(data)
    elif command == "list":
        keys = data["keys"]
        if not keys:
            print("no API keys")
        rows = [("ID", "NAME", "SCOPES", "RESOURCES", "EXPIRES", "LAST USED")] + [
            (k["id"], k["name"], ",".join(k["scopes"]), ",".join(k["resources"]),
             k["expires_at"][:10], (k["last_used_at"] or "-")[:16])
            for k in keys
        ]  # fmt: skip
        if keys:
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    elif command == "delete":
        print(f"deleted API key {data['deleted']}: it no longer works")
    else:
        _print_key(data)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="keysteward",
        description="Administer Keysteward directly against its storage, with the app's settings "
        "(environment variables, or --env-file).",
    )
    top.add_argument("--env-file", type=Path, help="read settings from NAME=VALUE lines first")
    areas = top.add_subparsers(
        dest="area", required=True, metavar="{keys,status,rekey,migrate-user-ids}"
    )
    overview = areas.add_parser(
        "status", help="connections, managed PATs, API keys and stuck revocations at a glance",
        description="A table of connections, managed PATs and API keys with status and days to "
        "expiry (coloured on a terminal; NO_COLOR turns colour off), and revocations that keep "
        "failing upstream.",
    )  # fmt: skip
    overview.add_argument("--json", action="store_true", help="print JSON for scripts")
    overview.set_defaults(func=status, verb="status")
    rekeying = areas.add_parser(
        "rekey", help="re-seal every stored secret under the first key of the ring",
        description="After putting a new key first in KEYSTEWARD_ENCRYPTION_KEYS: re-seal every "
        "stored secret under it, so older keys can be removed.",
    )  # fmt: skip
    rekeying.add_argument("--dry-run", action="store_true", help="count, change nothing")
    rekeying.add_argument("--json", action="store_true", help="print JSON for scripts")
    rekeying.set_defaults(func=rekey_command, verb="rekey")
    migrating = areas.add_parser(
        "migrate-user-ids", help="register user ids stored before ids were case-insensitive",
        description="Once, after upgrading: register every stored user id so any case of it "
        "reaches its rows; ids differing only by case are reported, never merged. The nightly "
        "sweep runs it too; once done, running it again is one read.",
    )  # fmt: skip
    migrating.add_argument("--json", action="store_true", help="print JSON for scripts")
    migrating.set_defaults(func=migrate_user_ids, verb="migrate-user-ids")
    keys = areas.add_parser("keys", help="scoped API keys", description="Scoped API keys.")
    verbs = keys.add_subparsers(dest="verb", required=True)

    def verb(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        sub.set_defaults(func=func)
        return sub

    create = verb("create", keys_create, "create a key; the key is printed once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--all", action="store_true",
        help="a '*' key: every scope on every resource (the bootstrap key; an HTTP key can only "
        "create keys within its own scopes and globs)",
    )  # fmt: skip
    create.add_argument(
        "--scope", action="append", choices=SCOPES, metavar="SCOPE",
        help=f"a scope to grant (repeat for more): {', '.join(SCOPES)}",
    )  # fmt: skip
    create.add_argument(
        "--resource", action="append", metavar="GLOB",
        help="an {app}/{user_id} glob the key may act on (repeat for more): '*', 'app-*/*', "
        "'*/alice@contoso.com'",
    )  # fmt: skip
    create.add_argument(
        "--days", type=int, default=MAX_DAYS, help=f"days until it expires, 1 to {MAX_DAYS}"
    )
    create.add_argument("--owner", default="", help="who answers for the key (free text)")
    verb("list", keys_list, "list keys (never their secrets)")
    regenerate = verb("regenerate", keys_regenerate, "new secret, same scopes, globs, expiry")
    regenerate.add_argument("id")
    update = verb("update", keys_update, "change a key's name or resource globs")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--resource", action="append", metavar="GLOB", help="replaces all globs")
    delete = verb("delete", keys_delete, "delete a key: it stops working at once")
    delete.add_argument("id")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = dict(os.environ)
    if args.env_file:
        env.update(_env_file(args.env_file))
    try:
        runtime = Runtime.build(Settings.from_env(env))
        data = args.func(args, runtime)
    except KeystewardError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": exc.error, "message": exc.message}), file=sys.stderr)
        else:
            print(f"keysteward: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _human(args.verb, data)
    return 0

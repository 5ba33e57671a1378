"""Command line of a generated gateway: `python -m <package> serve|admin ...`.

    serve [--transport http|stdio] [--host H] [--port P] [--stateless] [--sse]
          [--allowed-host HOST ...] [--allowed-origin ORIGIN ...] [--db URL]
          [--base-url CONNECTOR=URL ...] [--demo]
    admin [--db URL] tenant create NAME [--plan PLAN] | tenant list | tenant set-plan NAME PLAN
    admin [--db URL] key issue TENANT [--scopes read,write] [--user USER] [--ttl-days N]
                                      [--host-app] [--name LABEL]
    admin [--db URL] key list TENANT | key rotate KEY_ID [--ttl-days N] | key revoke KEY_ID
    admin [--db URL] connect TENANT CONNECTOR --field NAME=VALUE ... (VALUE @file reads a file)
    admin [--db URL] disconnect TENANT CONNECTOR
    admin [--db URL] connections TENANT
    admin [--db URL] user register TENANT USER | user list TENANT | user forget TENANT USER [--yes]
    admin [--db URL] events prune --before WHEN [--tenant TENANT] [--dry-run]

The database is `--db`, else `<IMPORT_NAME>_DATABASE_URL`, else `./var/<import_name>.db`.
stdio serving takes its API key from `<IMPORT_NAME>_API_KEY` (and a host key's user from
`<IMPORT_NAME>_USER`). A connector's base URL comes from `--base-url`, else
`<IMPORT_NAME>_BASE_URL_<CONNECTOR>`, else the manifest; an OAuth2 connector's token URL from
`<IMPORT_NAME>_TOKEN_URL_<CONNECTOR>`, else the manifest. Each must be an absolute http(s) URL
naming a connector of the gateway (an OAuth2 one, for a token URL): anything else is a usage
error, reported before a port is bound or a database created.
Exit codes: 0 ok, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from errno import EADDRINUSE
from pathlib import Path
from typing import Any, NoReturn

import anyio

from .auth import KeyVerifier, api_key_env, key_from_environ, user_env
from .catalog import AuthField, GatewaySpec
from .crypto import CredentialKeyError, key_source, secret_key_env
from .store import (
    DAY_US,
    SCOPES,
    US,
    IssuedKey,
    Store,
    StoreError,
    default_database_url,
    iso,
    key_file_of,
    normalise_url,
    now_us,
    open_store,
    parse_iso,
    sqlite_path,
)

DEMO_TENANT = "demo"
DEMO_USER = "demo-user"


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _pairs(values: Sequence[str] | None, what: str, shape: str = "NAME=VALUE") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{what} must look like {shape}")
        out[name.strip()] = value
    return out


def _prog(gateway: GatewaySpec) -> str:
    """How the command was started: the console script's name, or `python -m <package>`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if not name or name in ("__main__.py", "-c", "-m") or name.startswith("python"):
        return f"python -m {gateway.import_name}"
    return name


def _credential_fields(gateway: GatewaySpec) -> str:
    lines = [
        "credential fields (--field NAME=VALUE; VALUE @FILE reads a file; a missing required",
        "field is asked for on a terminal, a secret one without echo):",
    ]
    for name in sorted(gateway.connectors):
        fields = ", ".join(_field_text(f) for f in gateway.connectors[name].auth.fields)
        lines.append(f"  {name}: {fields or '(none)'}")
    return "\n".join(lines)


def _field_text(f: AuthField) -> str:
    notes = [note for note, on in (("secret", f.secret), ("optional", not f.required)) if on]
    return f"{f.name} ({', '.join(notes)})" if notes else f.name


def build_parser(gateway: GatewaySpec) -> argparse.ArgumentParser:
    prog = _prog(gateway)
    db_help = (
        "SQLite file path or database URL (default: "
        f"${gateway.import_name.upper()}_DATABASE_URL, else ./var/{gateway.import_name}.db)"
    )
    p = _Parser(prog=prog, description=gateway.title or gateway.server_name)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser(
        "serve",
        help="serve the gateway over streamable HTTP or stdio",
        description="Serve the gateway. HTTP: streamable HTTP at /mcp, bearer API keys. "
        f"stdio: one client, the API key from ${api_key_env(gateway.import_name)}.",
    )
    # Defaults are written into the help by hand: argparse's ArgumentDefaultsHelpFormatter
    # would add "(default: None)" to --db, whose default depends on the environment.
    s.add_argument(
        "--transport", choices=["http", "stdio"], default="http", help="transport (default: http)"
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="HTTP: interface to listen on (default: 127.0.0.1)"
    )
    s.add_argument(
        "--port", type=_port, default=8000, help="HTTP: port, 0 for any free port (default: 8000)"
    )
    s.add_argument("--stateless", action="store_true", help="HTTP: no MCP sessions")
    s.add_argument("--sse", action="store_true", help="HTTP: answer POSTs with SSE streams")
    s.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="HTTP: a Host header to accept besides loopback (repeatable)",
    )
    s.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="HTTP: an Origin header to accept besides loopback (repeatable)",
    )
    s.add_argument("--db", help=db_help)
    s.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="CONNECTOR=URL",
        help="point a connector at another base URL, an absolute http(s) URL (repeatable; "
        f"wins over ${gateway.import_name.upper()}_BASE_URL_<CONNECTOR>)",
    )
    s.add_argument("--demo", action="store_true", help="create a demo tenant and print its key")
    s.add_argument(
        "--log-level", default="warning", help="debug, info, warning or error (default: warning)"
    )

    a = sub.add_parser(
        "admin",
        help="manage tenants, keys, connections and users",
        description="Manage tenants, API keys, connections and users in the gateway database.",
    )
    a.add_argument("--db", help=db_help)
    asub = a.add_subparsers(dest="admin_command", required=True, parser_class=_Parser)

    t = asub.add_parser("tenant", help="create and list tenants, set a tenant's quota plan")
    ts = t.add_subparsers(dest="action", required=True)
    tc = ts.add_parser("create", help="create a tenant (workspace)")
    tc.add_argument("name")
    tc.add_argument("--plan", choices=sorted(gateway.plans), help="quota plan")
    ts.add_parser("list", help="list tenants")
    tp = ts.add_parser("set-plan", help="change a tenant's quota plan")
    tp.add_argument("tenant")
    tp.add_argument("plan", choices=sorted(gateway.plans))

    k = asub.add_parser("key", help="issue, list, rotate and revoke API keys")
    ks = k.add_subparsers(dest="action", required=True)
    ki = ks.add_parser("issue", help="issue an API key (printed once, stored as a hash)")
    ki.add_argument("tenant")
    ki.add_argument("--scopes", default="read,write", help="comma-separated: read,write")
    ki.add_argument("--user", help="bind the key to this registered user")
    ki.add_argument("--ttl-days", type=float, help=f"default {gateway.key_ttl_days}")
    ki.add_argument("--host-app", action="store_true", help="may name users (X-Gateway-User)")
    ki.add_argument("--name", help="a label for the key")
    kl = ks.add_parser("list", help="list a tenant's keys")
    kl.add_argument("tenant")
    kr = ks.add_parser(
        "rotate", help="issue a new key with the same settings and revoke the old one at once"
    )
    kr.add_argument("key_id", type=_key_id)
    kr.add_argument("--ttl-days", type=float)
    kv = ks.add_parser("revoke", help="revoke a key")
    kv.add_argument("key_id", type=_key_id)

    c = asub.add_parser(
        "connect",
        help="connect a connector for a tenant with its credentials",
        epilog=_credential_fields(gateway),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("tenant")
    c.add_argument("connector", choices=sorted(gateway.connectors))
    c.add_argument("--field", action="append", default=[], metavar="NAME=VALUE")
    c.add_argument(
        "--key-lost",
        action="store_true",
        help="store the credentials even though the configured key opens none of those "
        "already stored (their key is lost: connect every connection again)",
    )
    d = asub.add_parser("disconnect", help="disconnect a connector (its tools disappear)")
    d.add_argument("tenant")
    d.add_argument("connector")
    cl = asub.add_parser("connections", help="list a tenant's connections and their state")
    cl.add_argument("tenant")

    u = asub.add_parser("user", help="register and list end users")
    us = u.add_subparsers(dest="action", required=True)
    ur = us.add_parser("register", help="register an end user (idempotent)")
    ur.add_argument("tenant")
    ur.add_argument("user")
    ul = us.add_parser("list", help="list a tenant's users")
    ul.add_argument("tenant")
    uf = us.add_parser(
        "forget",
        help="erase a user: all its memory (every version), its registration, and the keys "
        "bound to it (revoked)",
    )
    uf.add_argument("tenant")
    uf.add_argument("user")
    uf.add_argument("--yes", action="store_true", help="erase without asking for confirmation")

    m = asub.add_parser("memory", help="maintain the memory search index")
    ms = m.add_subparsers(dest="action", required=True)
    ms.add_parser(
        "reindex",
        help="rebuild every tenant's memory search index from the stored items (SQLite), one "
        "tenant at a time: after an older gateway wrote to a database a newer one had migrated",
    )

    e = asub.add_parser("events", help="delete old events (usage counts stay)")
    es = e.add_subparsers(dest="action", required=True)
    ep = es.add_parser(
        "prune",
        help="delete the events recorded before a time, in small batches (the gateway may "
        "keep serving); usage counts and quotas do not change",
    )
    ep.add_argument(
        "--before",
        required=True,
        type=_cutoff,
        metavar="WHEN",
        help="an ISO 8601 date or date-time (UTC unless it says otherwise), or an age: "
        "90d, 12h, 2w",
    )
    ep.add_argument("--tenant", help="only this tenant's events (id or name)")
    ep.add_argument("--dry-run", action="store_true", help="say how many, delete none")
    return p


# --------------------------------------------------------------------------- helpers


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


_AGE = re.compile(r"(\d{1,6})([hdw])")
_AGE_US = {"h": 3600 * US, "d": DAY_US, "w": 7 * DAY_US}
# The earliest cutoff: an age reaching further back names no date (there is no year 0).
_EARLIEST_US = parse_iso("0001-01-01T00:00:00Z")


def _cutoff(text: str) -> int:
    """`events prune --before`: a past time, as an ISO 8601 date-time or an age (`90d`), in
    microseconds since the epoch."""
    text = text.strip()
    age = _AGE.fullmatch(text)
    if age is not None:
        at = now_us() - int(age[1]) * _AGE_US[age[2]]
        if at < _EARLIEST_US:
            raise argparse.ArgumentTypeError(
                f"{text} reaches back before the year 1: give a shorter age or a date"
            )
        return at
    try:
        at = parse_iso(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is neither an ISO 8601 date-time (2026-01-31T00:00:00Z) nor an "
            "age (90d, 12h, 2w)"
        ) from None
    if at > now_us():
        raise argparse.ArgumentTypeError(
            f"{text[:60]} is in the future: only events recorded before a past time are pruned"
        )
    return at


def _key_id(text: str) -> str:
    """A key's id (`key_...`): never the key itself, which an error message would echo."""
    if text.startswith("gwk_"):
        raise argparse.ArgumentTypeError(
            "that is a key itself, not its id: `admin key list TENANT` shows the ids (key_...)"
        )
    return text


def _unwritable_directory(db_url: str) -> Path | None:
    """The directory of a SQLite database file that exists there but cannot be written (a
    read-only mount), else None."""
    path = sqlite_path(db_url)
    if path is None or not path.is_file() or os.access(path.parent, os.W_OK):
        return None
    return path.parent


def _db_url(gateway: GatewaySpec, arg: str | None, environ: Mapping[str, str]) -> str:
    return arg or default_database_url(gateway, environ)


def _print(*parts: Any) -> None:
    print(*parts, flush=True)


def _key_line(info: Any) -> str:
    at = now_us()
    user = f" user={info.user_external_id}" if info.user_external_id else ""
    host = " host-app" if info.can_assert_user else ""
    name = f" name={info.name}" if info.name else ""
    return (
        f"{info.id}  {info.prefix}...  scopes={','.join(info.scopes)}{user}{host}{name}  "
        f"{info.status(at)}  expires={iso(info.expires_at)}"
    )


def _print_issued(issued: IssuedKey) -> None:
    _print(_key_line(issued.info))
    _print(f"API key (shown once, store it now): {issued.token}")


def _read_field(value: str) -> str:
    if value.startswith("@"):
        return Path(value[1:]).expanduser().read_text(encoding="utf-8").strip()
    return value


# --------------------------------------------------------------------------- admin


def _admin(gateway: GatewaySpec, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db_url = _db_url(gateway, args.db, environ)
    path = sqlite_path(db_url)
    creating = args.admin_command == "tenant" and args.action == "create"
    if path is not None and not path.exists() and not creating:
        raise StoreError(
            "no gateway database there yet: run `serve` once, or `admin tenant create` first "
            "(or pass the --db the server uses)"
        )
    store = open_store(gateway, db_url, environ=environ)
    try:
        return _admin_with(gateway, store, args)
    finally:
        store.dispose()


def _admin_with(gateway: GatewaySpec, store: Store, args: argparse.Namespace) -> int:
    cmd = args.admin_command
    action = getattr(args, "action", None)
    if cmd == "tenant" and action == "create":
        t = store.create_tenant(args.name, plan=args.plan)
        _print(f"{t.id}  {t.name}  plan={t.plan}")
    elif cmd == "tenant" and action == "list":
        for t in store.list_tenants():
            active = sum(1 for c in store.list_connections(t.id) if c.state == "active")
            _print(f"{t.id}  {t.name}  plan={t.plan}  active_connections={active}")
    elif cmd == "tenant" and action == "set-plan":
        t = store.set_plan(store.require_tenant(args.tenant).id, args.plan)
        _print(f"{t.id}  {t.name}  plan={t.plan}")
    elif cmd == "key" and action == "issue":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        tenant = store.require_tenant(args.tenant)
        _print_issued(
            store.issue_key(
                tenant.id,
                scopes=scopes,
                user=args.user,
                ttl_days=args.ttl_days,
                host_app=args.host_app,
                name=args.name,
            )
        )
    elif cmd == "key" and action == "list":
        for info in store.list_keys(store.require_tenant(args.tenant).id):
            _print(_key_line(info))
    elif cmd == "key" and action == "rotate":
        issued = store.rotate_key(args.key_id, ttl_days=args.ttl_days)
        _print(f"revoked {args.key_id}")
        _print_issued(issued)
    elif cmd == "key" and action == "revoke":
        _print(_key_line(store.revoke_key(args.key_id)))
    elif cmd == "connect":
        tenant = store.require_tenant(args.tenant)
        fields = {k: _read_field(v) for k, v in _pairs(args.field, "--field").items()}
        spec = gateway.connectors[args.connector]
        for f in spec.auth.fields:
            if f.name not in fields and f.required and sys.stdin.isatty():
                prompt = f"{spec.title} {f.title or f.name}: "
                try:
                    fields[f.name] = getpass.getpass(prompt) if f.secret else input(prompt)
                except (EOFError, KeyboardInterrupt):
                    print(file=sys.stderr)
                    raise UsageError(f"no {f.name} given: nothing was connected") from None
        unreadable = 0 if args.key_lost else store.key_opens_none()
        if unreadable:
            raise CredentialKeyError(
                f"the configured credential key opens none of the {unreadable} most recently "
                "stored credentials of this database: they were sealed with another key, which "
                "the gateway serving it uses, and it could not read these either. Use the same "
                f"key ({secret_key_env(gateway.import_name)}, or the key file next to an "
                "embedded database); if that key is lost, pass --key-lost"
            )
        rec = store.connect(tenant.id, args.connector, fields)
        _print(f"{tenant.name}  {rec.connector}  {rec.state}  connected_at={iso(rec.connected_at)}")
    elif cmd == "disconnect":
        tenant = store.require_tenant(args.tenant)
        rec = store.disconnect(tenant.id, args.connector)
        _print(f"{tenant.name}  {rec.connector}  {rec.state}")
    elif cmd == "connections":
        tenant = store.require_tenant(args.tenant)
        for rec in store.list_connections(tenant.id):
            err = f"  last_error={rec.last_error}" if rec.last_error else ""
            _print(
                f"{rec.connector}  {rec.state}  connected_at={iso(rec.connected_at)}  "
                f"last_success_at={iso(rec.last_success_at)}{err}"
            )
    elif cmd == "user" and action == "register":
        tenant = store.require_tenant(args.tenant)
        user, created = store.register_user(tenant.id, args.user)
        _print(
            f"{user.id}  {user.external_id}  {'registered' if created else 'already registered'}"
        )
    elif cmd == "user" and action == "list":
        for user in store.list_users(store.require_tenant(args.tenant).id):
            _print(f"{user.id}  {user.external_id}  created_at={iso(user.created_at)}")
    elif cmd == "user" and action == "forget":
        return _forget(gateway, store, args)
    elif cmd == "memory" and action == "reindex":
        from .memory import MemoryStore

        memory = MemoryStore(store.engine, settings=gateway.memory)
        memory.migrate()
        n = memory.reindex()
        _print(
            f"rebuilt the memory search index of {n} tenants"
            if store.is_sqlite
            else "nothing to rebuild: PostgreSQL computes each item's search vector itself"
        )
    elif cmd == "events" and action == "prune":
        only = store.require_tenant(args.tenant) if args.tenant else None
        tenant_id = only.id if only is not None else None
        whose = f"of tenant {only.name}" if only is not None else "of every tenant"
        if args.dry_run:
            n = store.count_events_before(args.before, tenant_id=tenant_id)
            _print(f"would delete {n} events {whose} recorded before {iso(args.before)} (dry run)")
        else:
            n = store.prune_events(args.before, tenant_id=tenant_id)
            _print(
                f"deleted {n} events {whose} recorded before {iso(args.before)}; "
                "usage counts are unchanged"
            )
    else:  # pragma: no cover - argparse enforces the choices
        return 2
    return 0


def _forget(gateway: GatewaySpec, store: Store, args: argparse.Namespace) -> int:
    """`admin user forget`: asks first on a terminal, and without one needs --yes."""
    from .memory import MemoryStore

    tenant = store.require_tenant(args.tenant)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "`user forget` erases for good and there is no terminal to ask on: pass --yes"
            )
        question = (
            f"Erase user {args.user!r} of tenant {tenant.name}: all its memory (every version), "
            "its registration, and the keys bound to it? This cannot be undone. [y/N] "
        )
        try:
            answer = input(question)
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            _print("nothing was erased")
            return 1
    memory = MemoryStore(store.engine, settings=gateway.memory)
    memory.migrate()
    done = store.forget_user(tenant.id, args.user, erase_memory=memory.erase_user)
    registration = "its registration deleted" if done.registered else "it was not registered"
    _print(
        f"forgot {args.user} of tenant {tenant.name}: {done.items} memory items (every "
        f"version) erased, {registration}, {done.keys} API keys bound to it revoked"
    )
    if not store.truncate_log():
        _print(
            "note: the database's write-ahead log could not be truncated now (a gateway was "
            "reading); pages it holds are overwritten as the gateway writes on"
        )
    return 0


# --------------------------------------------------------------------------- demo


def ensure_demo(store: Store, db_url: str) -> str:
    """Create (idempotently) the demo tenant and user; return a live read+write key.

    On SQLite the key is kept next to the database (mode 0600) so a restart prints the same
    key and client configs keep working; otherwise a new key is issued each start.
    """
    tenant = store.ensure_tenant(DEMO_TENANT)
    store.register_user(tenant.id, DEMO_USER)
    path = sqlite_path(db_url)
    key_file = path.with_name(path.name + ".demo-key") if path is not None else None
    if key_file is not None and key_file.exists():
        token = key_file.read_text(encoding="ascii").strip()
        principal = KeyVerifier(store).verify_sync(token)
        if principal is not None and principal.tenant_id == tenant.id:
            return token
    issued = store.issue_key(tenant.id, scopes=SCOPES, user=DEMO_USER, name="demo")
    if key_file is not None:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(issued.token + "\n")
    return issued.token


def _package_root(gateway: GatewaySpec) -> str | None:
    """The directory holding the generated package, when it is not installed."""
    if __package__ != f"{gateway.import_name}.runtime":
        return None
    root = Path(__file__).resolve().parents[2]
    if "site-packages" in root.parts or "dist-packages" in root.parts:
        return None
    return str(root)


def demo_banner(
    gateway: GatewaySpec,
    token: str,
    db_url: str,
    *,
    transport: str,
    url: str,
    base_urls: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """What `serve --demo` prints: the demo key and client configs. The stdio config starts
    its own server, so it carries this one's connector URLs (`base_urls` from --base-url, and
    the environment's overrides): without them that server would send the tenant's credentials
    to the manifests' production URLs instead of the stand-ins this one was pointed at."""
    # A database URL's password is never printed, not even here: the configs below show
    # `***` in its place, for the user to put back; so is the credential key.
    from .executor import connector_url_variables, masked_url

    db_arg = _shown_db(db_url)
    environ = environ or {}
    http_cfg = {
        "mcpServers": {
            gateway.server_name: {
                "type": "http",
                "url": url,
                "headers": {"Authorization": f"Bearer {token}"},
            }
        }
    }
    stdio_env: dict[str, str] = {api_key_env(gateway.import_name): token}
    root = _package_root(gateway)
    if root is not None:
        stdio_env["PYTHONPATH"] = root
    # A user and password in a connector URL (sent as Basic auth) are masked like the rest.
    urls = {k: masked_url(v) for k, v in connector_url_variables(gateway, environ).items()}
    stdio_env.update(urls)
    key_env = secret_key_env(gateway.import_name)
    if environ.get(key_env, "").strip():
        stdio_env[key_env] = "***"
    url_args = [
        arg
        for name, value in sorted((base_urls or {}).items())
        for arg in ("--base-url", f"{name}={masked_url(value)}")
    ]
    url_masked = any("***@" in a for a in url_args) or any("***@" in v for v in urls.values())
    stdio_cfg = {
        "mcpServers": {
            gateway.server_name: {
                "command": sys.executable,
                "args": [
                    "-m",
                    gateway.import_name,
                    "serve",
                    "--transport",
                    "stdio",
                    "--db",
                    db_arg,
                    *url_args,
                ],
                "env": stdio_env,
            }
        }
    }
    prog = f"{sys.executable} -m {gateway.import_name}"
    if root is not None:
        prog = f"PYTHONPATH={root} {prog}"
    example = "slack" if "slack" in gateway.connectors else next(iter(gateway.connectors), None)
    fields = ""
    if example is not None:
        fields = " ".join(
            f"--field {f.name}=<{(f.title or f.name).lower()}>"
            for f in gateway.connectors[example].auth.fields
        )
    lines = [
        f'Demo workspace "{DEMO_TENANT}" with user "{DEMO_USER}", database {db_arg}',
        f"API key (read+write): {token}",
    ]
    if "***" in db_arg and "***" not in db_url:
        lines.append("The database password is not shown: put it back where *** stands below.")
    if key_env in stdio_env:
        lines.append(f"{key_env} is not shown: put it back where *** stands below.")
    if url_masked:
        lines.append("A connector URL's user and password are not shown: put them back below.")
    if transport == "http":
        lines += [
            f"MCP endpoint (streamable HTTP): {url}",
            "",
            "Client config (HTTP, for clients that connect to a URL themselves, such as Claude "
            "Code or Cursor; Claude Desktop runs local commands only: use the stdio config "
            "below, or the mcp-remote bridge as in claude_desktop_config.http.json):",
            json.dumps(http_cfg, indent=2),
        ]
    lines += [
        "",
        "Client config (stdio):",
        json.dumps(stdio_cfg, indent=2),
        "",
        "Connect an app so its tools appear, e.g.:",
        f"  {prog} admin --db {db_arg} connect {DEMO_TENANT} {example} {fields}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- serve


def _serve(gateway: GatewaySpec, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .executor import (
        ConnectorConfigError,
        base_urls_from_env,
        check_base_urls,
        token_urls_from_env,
    )
    from .server import GatewayRuntime

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # httpx2 logs each upstream request at INFO with its URL, query string included: tool
        # arguments (a customer's e-mail searched for) reached the operator's log.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    db_url = _db_url(gateway, args.db, environ)
    # Connector URLs, from --base-url and the environment, are checked before a port is bound
    # or a database created.
    pairs = _pairs(args.base_url, "--base-url", "CONNECTOR=URL, e.g. slack=http://127.0.0.1:9000")
    try:
        base_urls = check_base_urls(gateway, pairs)
        base_urls_from_env(gateway, environ)
        token_urls_from_env(gateway, environ)
    except ConnectorConfigError as exc:
        raise UsageError(str(exc)) from None
    listener: socket.socket | None = None
    if args.transport == "http":
        # Bound before anything is announced: a port in use fails here, with nothing printed
        # that claims otherwise, and --port 0 announces the port the system chose.
        try:
            listener = listen(args.host, args.port)
        except OSError as exc:
            hint = ": pass another --port (0 picks a free one)" if exc.errno == EADDRINUSE else ""
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if isinstance(exc, socket.gaierror):
                reason = f"no such host ({exc.strerror})"
            print(
                f"error: cannot listen on {args.host}:{args.port}: {reason}{hint}",
                file=sys.stderr,
            )
            return 1
        args.port = listener.getsockname()[1]
    path = sqlite_path(db_url)
    if args.transport == "stdio" and not args.demo and path is not None and not path.exists():
        # No database, so no key can be valid: creating an empty one would only hide a typo.
        raise StoreError(
            "no gateway database there: pass the --db the admin commands use, or --demo"
        )
    runtime = GatewayRuntime.open(gateway, db_url, environ=environ, base_urls=base_urls)
    try:
        runtime.store.check_writable()  # before anything says it is serving
    except StoreError:
        runtime.close_sync()
        raise
    unreadable = runtime.store.key_opens_none()
    if unreadable:
        logging.getLogger(__name__).error(
            "the configured credential key opens none of the %d most recently stored "
            "credentials: they were sealed with another key, and their connectors' tools will "
            "answer not_connected until that key is restored (%s, or the key file next to an "
            "embedded database) or the connections are made again",
            unreadable,
            secret_key_env(gateway.import_name),
        )
    demo_token: str | None = None
    if args.demo:
        demo_token = ensure_demo(runtime.store, db_url)
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(
            demo_banner(
                gateway,
                demo_token,
                db_url,
                transport=args.transport,
                url=f"http://{host}:{args.port}/mcp",
                base_urls=base_urls,
                environ=environ,
            ),
            file=sys.stderr,
            flush=True,
        )
    # The catalog and the prebuilt tool objects live as long as the process: keep the
    # garbage collector from walking them again and again.
    gc.collect()
    gc.freeze()
    if args.transport == "stdio":
        return _serve_stdio(gateway, runtime, environ, demo_token, db_url)
    from .app import build_http_app, uvicorn_server

    app = build_http_app(
        runtime,
        host=args.host,
        port=args.port,
        stateless=args.stateless,
        json_response=not args.sse,
        allowed_hosts=args.allowed_host,
        allowed_origins=args.allowed_origin,
    )
    if not args.demo:
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(
            f"{gateway.server_name}: serving http://{shown}:{args.port}/mcp "
            f"(database {_shown_db(db_url)}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
    assert listener is not None
    server = uvicorn_server(
        app, runtime, host=args.host, port=args.port, log_level=args.log_level.lower()
    )
    server.run(sockets=[listener])
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The HTTP server's listening socket, bound. Made with proto IPPROTO_TCP, as asyncio's own
    listeners are: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose
    socket says so, and with it on, a response written in two parts waited for the client's
    delayed ACK, about 40 ms per request (`socket.create_server` leaves proto 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _serve_stdio(
    gateway: GatewaySpec,
    runtime: Any,
    environ: Mapping[str, str],
    demo_token: str | None,
    db_url: str,
) -> int:
    from .app import serve_stdio
    from .server import stdio_user

    key = key_from_environ(gateway.import_name, environ) or demo_token
    if key is None or runtime.verifier.verify_sync(key) is None:
        runtime.close_sync()
        print(
            f"error: set {api_key_env(gateway.import_name)} to a valid API key of a tenant of "
            f"{_shown_db(db_url)} (issue one with: python -m {gateway.import_name} admin "
            f"--db {_shown_db(db_url)} key issue <tenant>)",
            file=sys.stderr,
        )
        return 1
    user = environ.get(user_env(gateway.import_name)) or None
    source = stdio_user(gateway, _shown_db(db_url))
    try:
        anyio.run(
            lambda: serve_stdio(
                runtime, api_key=key, asserted_user=user, user_source=source, exit_on_signal=True
            )
        )
    finally:
        runtime.close_sync()
    return 0


# --------------------------------------------------------------------------- entry point


def _shown_db(db_url: str) -> str:
    """The database for messages: a SQLite file's path, else the URL without its password."""
    import sqlalchemy as sa

    path = sqlite_path(db_url)
    if path is not None:
        return str(path)
    try:
        return sa.engine.make_url(db_url).render_as_string(hide_password=True)
    except Exception:
        return "(the --db URL)"


def _db_url_problem(db_url: str) -> str | None:
    """Why a database URL cannot be used, said without the URL (it may hold a password), or
    None. A database that cannot be reached is found later, when it is opened."""
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = sa.engine.make_url(normalise_url(db_url))
        url.get_dialect()
    except NoSuchModuleError:
        return "an unknown kind of database (a SQLite file path, or a postgresql:// URL)"
    except (ValueError, ArgumentError) as exc:
        port = "invalid literal for int()" in str(exc)
        return "its port is not a number" if port else "it cannot be parsed"
    return None


def main(gateway: GatewaySpec, argv: Sequence[str] | None = None) -> int:
    import sqlalchemy.exc

    args = build_parser(gateway).parse_args(list(sys.argv[1:] if argv is None else argv))
    environ = os.environ
    db_url = _db_url(gateway, args.db, environ)
    problem = _db_url_problem(db_url)
    if problem is not None:
        where = "--db" if args.db else gateway.import_name.upper() + "_DATABASE_URL"
        print(
            f"error: {where} is not a database URL this gateway can use: {problem}", file=sys.stderr
        )
        return 2
    db = _shown_db(db_url)
    try:
        if args.command == "admin":
            return _admin(gateway, args, environ)
        return _serve(gateway, args, environ)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CredentialKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        # Named where the key really comes from (the key file, when the variable is unset),
        # unless the message already says it.
        key_file = key_file_of(db_url)
        named = [secret_key_env(gateway.import_name), *([str(key_file)] if key_file else [])]
        if not any(source in str(exc) for source in named):
            where = key_source(gateway.import_name, environ, key_file=key_file)
            print(f"hint: the key comes from {where}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"error: {exc} (database {db})", file=sys.stderr)
        return 1
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = first[0] if first else type(exc).__name__
        locked_in = _unwritable_directory(db_url) if "unable to open" in reason else None
        if locked_in is not None:
            # A file on a read-only mount: SQLite opens it, then cannot create the -wal and
            # -shm files its WAL journal needs beside it.
            print(
                f"error: the database is read-only ({reason}): its directory {locked_in} "
                "cannot be written, and SQLite must create its -wal and -shm files there; "
                "make the directory writable for this user",
                file=sys.stderr,
            )
            return 1
        print(f"error: cannot use the database {db}: {reason}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("psycopg", "psycopg2", "MySQLdb", "pymysql"):
            print(
                f"error: the driver for the database {db} is not installed ({exc.name}); "
                f"PostgreSQL needs the package's `postgres` extra",
                file=sys.stderr,
            )
            return 1
        raise
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1

"""The command line: admin commands in-process, `serve` over stdio and HTTP as subprocesses."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from generator.runtime.cli import main
from generator.runtime.crypto import generate_key
from generator.runtime.store import Store, make_engine, period_bounds
from tests.runtime.support import (
    GENERATED,
    ROOT,
    TOKEN_RE,
    FakeUpstream,
    free_port,
    updates_until,
)

LAUNCHER = str(ROOT / "tests" / "runtime" / "launcher.py")


def run(gateway, capsys, *argv: str) -> tuple[int, str, str]:
    code = main(gateway, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_key_lives_at_most_ten_years(gateway, tmp_path: Path, capsys) -> None:
    """`key issue --ttl-days 3000000` stored the key, then failed to print it (year 10240 is
    out of range), so its secret was never shown and `key list` failed for the tenant from then
    on; 1e12 days overflowed SQLite's integers. A ttl outside 0-3650 days (NaN too) is refused
    before anything is written."""
    db = str(tmp_path / "gw.db")
    assert run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")[0] == 0
    for ttl in ("3000000", "1e12", "nan", "inf", "0", "-1"):
        code, out, err = run(
            gateway, capsys, "admin", "--db", db, "key", "issue", "acme", "--ttl-days", ttl
        )
        assert code == 1 and out == "", (ttl, out)
        assert "ttl is more than 0 and at most 3,650 days" in err, err
    code, out, err = run(gateway, capsys, "admin", "--db", db, "key", "list", "acme")
    assert (code, out, err) == (0, "", "")
    code, out, _ = run(
        gateway, capsys, "admin", "--db", db, "key", "issue", "acme", "--ttl-days", "3650"
    )
    assert code == 0 and TOKEN_RE.search(out)
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "rotate", out.split()[0])
    assert code == 0 and TOKEN_RE.search(out)
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "list", "acme")
    assert code == 0 and out.count("\n") == 2


def test_admin_workflow(gateway, tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "gw.db")
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    assert code == 0 and "acme" in out and "plan=starter" in out
    code, _, err = run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    assert code == 1 and "already exists" in err
    assert stat.S_IMODE((tmp_path / "gw.db.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "gw.db").stat().st_mode) == 0o600  # test_store: why

    code, out, _ = run(gateway, capsys, "admin", "--db", db, "user", "register", "acme", "ash")
    assert code == 0 and "registered" in out
    code, out, _ = run(
        gateway,
        capsys,
        "admin",
        "--db",
        db,
        "key",
        "issue",
        "acme",
        "--scopes",
        "read",
        "--user",
        "ash",
        "--ttl-days",
        "7",
    )
    assert code == 0
    token = TOKEN_RE.search(out)
    assert token is not None and "scopes=read" in out and "user=ash" in out
    key_id = out.split()[0]

    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "list", "acme")
    assert key_id in out and token.group(0) not in out and "active" in out

    secret_file = tmp_path / "token.txt"
    secret_file.write_text("xoxb-from-file\n")
    code, out, _ = run(
        gateway,
        capsys,
        "admin",
        "--db",
        db,
        "connect",
        "acme",
        "slack",
        "--field",
        f"bot_token=@{secret_file}",
    )
    assert code == 0 and "slack  active" in out and "xoxb" not in out
    code, _, err = run(
        gateway, capsys, "admin", "--db", db, "connect", "acme", "shopify", "--field", "shop=x"
    )
    assert code == 1 and "access_token" in err
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "connections", "acme")
    assert "slack  active" in out
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "tenant", "list")
    assert "active_connections=1" in out

    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "rotate", key_id)
    assert code == 0 and f"revoked {key_id}" in out
    new_token = TOKEN_RE.search(out)
    assert new_token is not None and new_token.group(0) != token.group(0)
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "list", "acme")
    assert "revoked" in out and out.count("user=ash") == 2
    new_id = [line.split()[0] for line in out.splitlines() if "active" in line][0]
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "key", "revoke", new_id)
    assert code == 0 and "revoked" in out

    code, out, _ = run(gateway, capsys, "admin", "--db", db, "disconnect", "acme", "slack")
    assert code == 0 and "disconnected" in out
    code, _, err = run(gateway, capsys, "admin", "--db", db, "disconnect", "acme", "slack")
    assert code == 1 and "not connected" in err

    store = Store(make_engine(db), gateway)
    assert store.get_connection(store.require_tenant("acme").id, "slack").sealed_credentials is None
    store.dispose()


def test_admin_errors(gateway, tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "gw.db")
    # No database at that path (a wrong --db, or the wrong working directory): said, with the
    # path, and no empty database is left behind.
    code, _, err = run(gateway, capsys, "admin", "--db", db, "key", "issue", "nobody")
    assert code == 1 and "no gateway database" in err and db in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as exc:
        main(gateway, ["admin", "--db", db, "tenant", "create", "x", "--plan", "platinum"])
    assert exc.value.code == 2
    run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    code, _, err = run(gateway, capsys, "admin", "--db", db, "key", "issue", "nobody")
    assert code == 1 and "no tenant 'nobody'" in err and db in err
    code, _, err = run(
        gateway, capsys, "admin", "--db", db, "connect", "acme", "slack", "--field", "oops"
    )
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = run(
        gateway, capsys, "admin", "--db", db, "key", "issue", "acme", "--scopes", "admin"
    )
    assert code == 1 and "scopes" in err
    code, _, err = run(
        gateway, capsys, "admin", "--db", db, "key", "issue", "acme", "--user", "ghost"
    )
    assert code == 1 and "register it first" in err


def test_an_unreachable_database_is_one_line_without_its_password(
    gateway, capsys, monkeypatch
) -> None:
    from generator.runtime.crypto import generate_key

    monkeypatch.setenv("FASTN_GATEWAY_SECRET_KEY", generate_key())
    url = "postgresql+psycopg://gw:s3cret-pw@127.0.0.1:1/gw"
    code, out, err = run(gateway, capsys, "admin", "--db", url, "tenant", "list")
    assert code == 1 and out == ""
    assert err.startswith(
        "error: cannot use the database postgresql+psycopg://gw:***@127.0.0.1:1/gw"
    )
    assert "s3cret-pw" not in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["admin", "--db", "postgresql://gw:s3cret-pw@h:notaport/gw", "tenant", "list"],
            {},
            "error: --db is not a database URL this gateway can use: its port is not a number",
        ),
        (
            ["serve", "--db", "postgresql://gw:s3cret-pw@[::1/gw"],
            {},
            "error: --db is not a database URL this gateway can use:",
        ),
        (
            ["admin", "tenant", "list"],
            {"FASTN_GATEWAY_DATABASE_URL": "bogus://gw:s3cret-pw@h/gw"},
            "error: FASTN_GATEWAY_DATABASE_URL is not a database URL this gateway can use: an "
            "unknown kind of database",
        ),
    ],
)
def test_a_database_url_that_cannot_be_used_is_one_line_without_its_password(
    gateway, capsys, monkeypatch, argv: list[str], env: dict[str, str], expected: str
) -> None:
    """It was a traceback (a port that is not a number), or a message about the secret key
    (a kind of database that does not exist)."""
    monkeypatch.delenv("FASTN_GATEWAY_SECRET_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(gateway, capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert "s3cret-pw" not in err


def test_command_line_mistakes_are_usage_errors_that_echo_no_secret(
    gateway, tmp_path: Path, capsys
) -> None:
    for port in ("99999", "-1"):
        with pytest.raises(SystemExit) as exc:
            main(gateway, ["serve", "--port", port])
        assert exc.value.code == 2
        assert "a port is 0 to 65535" in capsys.readouterr().err
    db = str(tmp_path / "gw.db")
    run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    secret = "gwk_" + "s" * 43  # the key itself, where its id was wanted
    for action in ("revoke", "rotate"):
        with pytest.raises(SystemExit) as exc:
            main(gateway, ["admin", "--db", db, "key", action, secret])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "not its id" in err and secret not in err
    code, _, err = run(gateway, capsys, "admin", "--db", db, "disconnect", "acme", "nope")
    assert code == 1 and "unknown connector 'nope'; connectors: github" in err


def test_a_credential_prompt_left_with_ctrl_d_or_ctrl_c_connects_nothing(
    gateway, tmp_path: Path, capsys, monkeypatch
) -> None:
    import getpass

    db = str(tmp_path / "gw.db")
    run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    for raised in (EOFError, KeyboardInterrupt):

        def prompt(_text: str = "", raised: type[BaseException] = raised) -> str:
            raise raised

        monkeypatch.setattr(getpass, "getpass", prompt)
        code, _, err = run(gateway, capsys, "admin", "--db", db, "connect", "acme", "slack")
        assert code == 2 and "no bot_token given: nothing was connected" in err, err
        assert "Traceback" not in err
    code, out, _ = run(gateway, capsys, "admin", "--db", db, "connections", "acme")
    assert code == 0 and "slack" not in out


def test_connect_refuses_a_key_that_opens_none_of_the_stored_credentials(
    gateway, tmp_path: Path, capsys, monkeypatch
) -> None:
    """An admin shell given another credential key than the server's (which uses the key file
    next to the database) stored credentials no gateway could read, and said nothing."""
    from generator.runtime.crypto import generate_key

    monkeypatch.delenv("FASTN_GATEWAY_SECRET_KEY", raising=False)
    db = str(tmp_path / "gw.db")
    admin = ["admin", "--db", db]
    run(gateway, capsys, *admin, "tenant", "create", "acme")
    code, _, err = run(
        gateway, capsys, *admin, "connect", "acme", "slack", "--field", "bot_token=a"
    )
    assert code == 0, err
    monkeypatch.setenv("FASTN_GATEWAY_SECRET_KEY", generate_key())
    shopify = ["connect", "acme", "shopify", "--field", "shop=acme", "--field", "access_token=b"]
    code, out, err = run(gateway, capsys, *admin, *shopify)
    assert code == 1 and out == ""
    assert err.startswith(
        "error: the configured credential key opens none of the 1 most recently stored "
        "credentials of this database"
    ), err
    assert "pass --key-lost" in err and "Traceback" not in err
    code, out, _ = run(gateway, capsys, *admin, "connections", "acme")
    assert code == 0 and "shopify" not in out  # nothing stored
    code, _, err = run(gateway, capsys, *admin, *shopify, "--key-lost")
    assert code == 0, err
    # the new key now opens one of the stored credentials (the latest): it is accepted
    code, _, err = run(
        gateway, capsys, *admin, "connect", "acme", "slack", "--field", "bot_token=c"
    )
    assert code == 0, err


def test_env_secret_key_is_used(gateway, tmp_path: Path, capsys, monkeypatch) -> None:
    db = str(tmp_path / "gw.db")
    monkeypatch.setenv("FASTN_GATEWAY_SECRET_KEY", generate_key())
    run(gateway, capsys, "admin", "--db", db, "tenant", "create", "acme")
    code, _, _ = run(
        gateway, capsys, "admin", "--db", db, "connect", "acme", "slack", "--field", "bot_token=x"
    )
    assert code == 0
    assert not (tmp_path / "gw.db.key").exists()
    monkeypatch.setenv("FASTN_GATEWAY_SECRET_KEY", generate_key())  # wrong key now
    code, _, err = run(gateway, capsys, "admin", "--db", db, "connections", "acme")
    assert code == 0  # listing needs no decryption


# ----------------------------------------------------------------------------- serve: configuration


BAD_URL_SETTINGS = [
    # (environment, --base-url values, what the one-line error must say)
    (
        {"FASTN_GATEWAY_BASE_URL_SLACK": "ftp://x"},
        [],
        "FASTN_GATEWAY_BASE_URL_SLACK: 'ftp://x' uses the scheme 'ftp'",
    ),
    (
        {"FASTN_GATEWAY_BASE_URL_SLACK": "notaurl"},
        [],
        "FASTN_GATEWAY_BASE_URL_SLACK: 'notaurl' is not an absolute URL",
    ),
    (
        {"FASTN_GATEWAY_TOKEN_URL_HUBSPOT": "127.0.0.1:9000/token"},
        [],
        "FASTN_GATEWAY_TOKEN_URL_HUBSPOT: '127.0.0.1:9000/token' is not an absolute URL",
    ),
    (
        {"FASTN_GATEWAY_BASE_URL_GITHUB": "http://user:pw@:9000"},
        [],
        "FASTN_GATEWAY_BASE_URL_GITHUB: 'http://***@:9000' has no host",
    ),
    (
        {"FASTN_GATEWAY_BASE_URL_NOTION": "http://127.0.0.1:9000"},
        [],
        "FASTN_GATEWAY_BASE_URL_NOTION names no connector of this gateway "
        "(known: github, hubspot, shopify, slack; e.g. FASTN_GATEWAY_BASE_URL_GITHUB)",
    ),
    (
        {"FASTN_GATEWAY_TOKEN_URL_SLACK": "http://127.0.0.1:9000/token"},
        [],
        "FASTN_GATEWAY_TOKEN_URL_SLACK: slack does not use OAuth2, so it has no token URL "
        "(OAuth2 connectors: hubspot)",
    ),
    ({}, ["slack=ftp://x"], "--base-url slack: 'ftp://x' uses the scheme 'ftp'"),
    ({}, ["slack=127.0.0.1:9000"], "--base-url slack: '127.0.0.1:9000' is not an absolute URL"),
    ({}, ["slack=http://127.0.0.1:x"], "--base-url slack: 'http://127.0.0.1:x' is not a valid URL"),
    (
        {},
        ["notion=http://127.0.0.1:9000"],
        "--base-url names no connector of this gateway: notion "
        "(known: github, hubspot, shopify, slack)",
    ),
    ({}, ["slack"], "--base-url must look like CONNECTOR=URL"),
    # A query, a fragment or a user:password, which a manifest's base_url may not hold either
    # (GEN226): the calls' own path and query were appended after the query (or were lost).
    (
        {},
        ["slack=http://127.0.0.1:9000/api?x=1"],
        "--base-url slack: 'http://127.0.0.1:9000/api?x=1' has a query (?x=1)",
    ),
    (
        {"FASTN_GATEWAY_BASE_URL_SLACK": "http://127.0.0.1:9000/api?"},
        [],
        "FASTN_GATEWAY_BASE_URL_SLACK: 'http://127.0.0.1:9000/api?' has a query (?)",
    ),
    (
        {"FASTN_GATEWAY_TOKEN_URL_HUBSPOT": "http://127.0.0.1:9000/token?grant=x#top"},
        [],
        "FASTN_GATEWAY_TOKEN_URL_HUBSPOT: 'http://127.0.0.1:9000/token?grant=x#top' has a query",
    ),
    (
        {},
        ["slack=http://127.0.0.1:9000/api#top"],
        "--base-url slack: 'http://127.0.0.1:9000/api#top' has a fragment (#top)",
    ),
    (
        {"FASTN_GATEWAY_BASE_URL_GITHUB": "http://user:pw@127.0.0.1:9000"},
        [],
        "FASTN_GATEWAY_BASE_URL_GITHUB: 'http://***@127.0.0.1:9000' holds a user name or password",
    ),
    (
        {},
        ["slack=http://bot@127.0.0.1:9000"],
        "--base-url slack: 'http://***@127.0.0.1:9000' holds",
    ),
]


@pytest.mark.parametrize("transport", ["http", "stdio"])
@pytest.mark.parametrize(("environ", "flags", "said"), BAD_URL_SETTINGS)
def test_bad_connector_urls_are_one_line_usage_errors_before_anything_is_created(
    gateway, tmp_path: Path, capsys, monkeypatch, transport: str, environ, flags, said: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "var" / "gw.db"
    argv = ["serve", "--transport", transport, "--port", "0", "--db", str(db), "--demo"]
    for flag in flags:
        argv += ["--base-url", flag]
    code, out, err = run(gateway, capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: " + said) and err.count("\n") == 1, err
    assert "http(s) URL" in err or "connector" in err or "CONNECTOR=URL" in err
    assert "pw" not in err  # a password in the URL is not repeated
    assert list(tmp_path.iterdir()) == []  # no database, no key file


@pytest.mark.skipif(
    not (GENERATED / "fastn_gateway" / "runtime" / "cli.py").exists(), reason="no build"
)
def test_the_generated_package_reports_a_bad_url_variable_in_one_line(tmp_path: Path) -> None:
    """`python -m fastn_gateway serve` as a deployment runs it: exit 2, no traceback, and no
    ./var/ database created in the directory it was started from."""
    env = _env(FASTN_GATEWAY_BASE_URL_SLACK="notaurl")
    env["PYTHONPATH"] = str(GENERATED)
    proc = subprocess.run(
        [sys.executable, "-m", "fastn_gateway", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: FASTN_GATEWAY_BASE_URL_SLACK: 'notaurl' is not an")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("environ", "flags", "said"),
    [
        (
            {},
            ["--base-url", "slack=http://127.0.0.1:9000/api?x=1"],
            "--base-url slack: 'http://127.0.0.1:9000/api?x=1' has a query (?x=1)",
        ),
        (
            {"FASTN_GATEWAY_BASE_URL_SLACK": "http://127.0.0.1:9000/v1?x=1"},
            [],
            "FASTN_GATEWAY_BASE_URL_SLACK: 'http://127.0.0.1:9000/v1?x=1' has a query (?x=1)",
        ),
        (
            {"FASTN_GATEWAY_BASE_URL_SLACK": "http://bot:s3cret@127.0.0.1:9000/api"},
            [],
            "FASTN_GATEWAY_BASE_URL_SLACK: 'http://***@127.0.0.1:9000/api' holds a user name",
        ),
    ],
)
def test_serve_refuses_a_connector_url_with_a_query_or_credentials_before_binding_its_port(
    tmp_path: Path, environ: dict[str, str], flags: list[str], said: str
) -> None:
    """`serve` accepted such a URL and sent calls to the wrong endpoint: the upstream got
    `/api?limit=100&...` (the capability's path and x=1 lost), a POST went to `/v1?x=1/search`.
    Now it is a one-line usage error (exit 2), before the port is bound or a database made."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, LAUNCHER, "serve", "--port", str(port), "--db", "var/gw.db", *flags],
        env=_env(**environ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: " + said), proc.stderr
    assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
    import socket

    with socket.socket() as s:  # the port was never bound (nor is it now)
        s.bind(("127.0.0.1", port))


def test_good_connector_urls_from_the_environment_and_the_flag_are_served(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The checks accept what deployments write: placeholders, a trailing slash, an empty
    variable (no override); the flag wins over the environment."""
    db = str(tmp_path / "gw.db")
    ka, _, _ = _setup(gateway, db, upstream)
    env = _env(
        FASTN_GATEWAY_API_KEY=ka,
        FASTN_GATEWAY_BASE_URL_SLACK="http://127.0.0.1:1/nothing-here",
        FASTN_GATEWAY_BASE_URL_SHOPIFY=upstream.base_urls()["shopify"] + "/",
        FASTN_GATEWAY_BASE_URL_GITHUB="",
        FASTN_GATEWAY_TOKEN_URL_HUBSPOT="https://127.0.0.1:1/oauth/v1/token",
    )
    argv = ["serve", "--transport", "stdio", "--db", db]
    argv += ["--base-url", f"slack={upstream.base_urls()['slack']}"]

    async def calls() -> tuple[bool, bool]:
        async with Client(_stdio([LAUNCHER, *argv], env)) as c:
            slack = await c.call_tool("slack_list_channels", {})
            shop = await c.call_tool("shopify_list_orders", {})
        return slack.is_error, shop.is_error

    assert anyio.run(calls) == (False, False)


def test_serve_help_shows_one_default_per_option(gateway, capsys) -> None:
    with pytest.raises(SystemExit):
        main(gateway, ["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: [])" not in text
    assert "(default: False)" not in text and "[default:" not in text
    assert (
        "SQLite file path or database URL (default: $FASTN_GATEWAY_DATABASE_URL, else "
        "./var/fastn_gateway.db)" in text
    )
    assert text.count("(default:") == 5  # transport, host, port, db, log level


def test_connect_help_says_which_fields_are_secret_or_optional(gateway, capsys) -> None:
    with pytest.raises(SystemExit):
        main(gateway, ["admin", "connect", "--help"])
    text = capsys.readouterr().out
    assert "  shopify: shop, access_token (secret)\n" in text
    assert "refresh_token (secret), client_id, client_secret (secret)" in text


# ----------------------------------------------------------------------------- stdio


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTN_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _setup(gateway, db: str, upstream: FakeUpstream) -> tuple[str, str, str]:
    from generator.runtime.server import open_store

    store = open_store(gateway, db, environ={})
    a = store.create_tenant("acme")
    b = store.create_tenant("bravo")
    upstream.slack_tokens |= {"xoxb-acme", "xoxb-bravo"}
    upstream.shopify_tokens |= {"shpat-acme"}
    store.connect(a.id, "slack", {"bot_token": "xoxb-acme"})
    store.connect(a.id, "shopify", {"shop": "acme", "access_token": "shpat-acme"})
    store.connect(b.id, "slack", {"bot_token": "xoxb-bravo"})
    ka = store.issue_key(a.id).token
    kb = store.issue_key(b.id).token
    store.dispose()
    return ka, kb, a.id


def _stdio(args: list[str], env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=args, env=env)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_two_tenants(
    gateway, tmp_path: Path, upstream: FakeUpstream, mode: str
) -> None:
    db = str(tmp_path / "gw.db")
    ka, kb, tenant_a = _setup(gateway, db, upstream)
    base = [
        LAUNCHER,
        "serve",
        "--transport",
        "stdio",
        "--db",
        db,
        "--base-url",
        f"slack={upstream.base_urls()['slack']}",
    ]
    async with Client(_stdio(base, _env(FASTN_GATEWAY_API_KEY=ka)), mode=mode) as c:
        a = {t.name for t in (await c.list_tools()).tools}
        r = await c.call_tool("slack_send_message", {"channel": "C1", "text": "via stdio"})
        assert not r.is_error, r.content
    assert upstream.requests[-1] == ("/slack/chat.postMessage", "xoxb-acme")
    async with Client(_stdio(base, _env(FASTN_GATEWAY_API_KEY=kb)), mode=mode) as c:
        b = {t.name for t in (await c.list_tools()).tools}
    assert "shopify_list_orders" in a and "shopify_list_orders" not in b
    # the stdio process flushed its records when stdin closed
    store = Store(make_engine(db), gateway)
    events = store.query_events(tenant_a, type_="tool_call")
    assert [e.tool for e in events] == ["slack_send_message"]
    store.dispose()


async def test_a_listen_stream_hears_what_another_process_served(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Two gateway processes on one database: a listen stream opened on this one hears of the
    calls and memory updates the other serves (found by the change poll), and of this one's
    own just once."""
    from generator.runtime.server import GatewayRuntime, open_store

    db = str(tmp_path / "gw.db")
    store = open_store(gateway, db, environ={})
    acme = store.create_tenant("acme")
    upstream.slack_tokens.add("xoxb-acme")
    store.connect(acme.id, "slack", {"bot_token": "xoxb-acme"})
    store.register_user(acme.id, "ash")
    key = store.issue_key(acme.id, scopes=["read", "write"], user="ash").token
    store.dispose()
    slack = f"slack={upstream.base_urls()['slack']}"
    other = _stdio(
        [LAUNCHER, "serve", "--transport", "stdio", "--db", db, "--base-url", slack],
        _env(FASTN_GATEWAY_API_KEY=key),
    )
    watched = [
        "gateway://events/recent",
        "gateway://usage",
        "gateway://integrations/slack",
        "memory://users/ash/profile",
        "memory://users/ash/log",
    ]
    here = GatewayRuntime.open(gateway, db, environ={}, base_urls=upstream.base_urls())

    async def heard(sub: Any, wanted: set[str]) -> set[str]:
        """Poll until the stream has announced every URI of `wanted`; what it announced."""
        got: set[str] = set()
        with anyio.fail_after(20):
            while not wanted <= got:
                await here.poll_changes()
                with anyio.move_on_after(0.3):
                    async for event in sub:
                        got.add(event.uri)
                        if wanted <= got:
                            break
        with anyio.move_on_after(0.3):  # and whatever else it announces with them
            async for event in sub:
                got.add(event.uri)
        return got

    try:
        async with (
            Client(here.build_server(api_key=key)) as mine,
            mine.listen(resource_subscriptions=watched) as sub,
        ):
            await here.poll_changes()  # the baseline: what the database held before
            async with Client(other) as theirs:
                r = await theirs.call_tool("slack_send_message", {"channel": "C1", "text": "hi"})
                assert not r.is_error, r.content
                assert await heard(sub, set(watched[:3])) == set(watched[:3])

                r = await theirs.call_tool("update_memory", {"observations": [{"text": "tea"}]})
                assert not r.is_error, r.content
                # The memory, and the call that updated it (a call of a native tool).
                wanted = {*watched[3:], *watched[:2]}
                assert await heard(sub, wanted) == wanted

                # A refused call counts nothing: only the events changed.
                r = await theirs.call_tool("slack_send_message", {"channel": 7})
                assert r.is_error and "invalid_arguments" in r.content[0].text
                assert await heard(sub, {watched[0]}) == {watched[0]}

            # This process's own calls are announced as they are made, not again by the poll.
            r = await mine.call_tool("slack_send_message", {"channel": "C1", "text": "mine"})
            assert not r.is_error, r.content
            r = await mine.call_tool("update_memory", {"observations": [{"text": "coffee"}]})
            assert not r.is_error, r.content
            assert await updates_until(sub, set(watched)) == set(watched)
            with anyio.move_on_after(0.3):  # the last call's record is announced after it
                async for _event in sub:
                    pass
            await here.flush_records()
            await here.poll_changes()
            with anyio.move_on_after(0.5):
                async for event in sub:
                    raise AssertionError(f"announced twice: {event}")
    finally:
        await here.aclose()


async def test_admin_connections_after_a_reconnection_show_a_fresh_status(
    gateway, tmp_path: Path, upstream: FakeUpstream, capsys
) -> None:
    """A successful call over stdio sets last_success_at; `admin connect` on the existing
    connection starts over: no success or error from before its connected_at."""
    db = str(tmp_path / "gw.db")
    ka, _, _ = _setup(gateway, db, upstream)
    argv = [LAUNCHER, "serve", "--transport", "stdio", "--db", db]
    argv += ["--base-url", f"slack={upstream.base_urls()['slack']}"]
    async with Client(_stdio(argv, _env(FASTN_GATEWAY_API_KEY=ka))) as c:
        assert not (await c.call_tool("slack_list_channels", {})).is_error

    def slack_line() -> dict[str, str]:
        code, out, _ = run(gateway, capsys, "admin", "--db", db, "connections", "acme")
        assert code == 0
        line = next(x for x in out.splitlines() if x.startswith("slack "))
        return dict(part.split("=", 1) for part in line.split()[2:])

    before = slack_line()
    assert before["last_success_at"] != "None"
    code, _, _ = run(
        gateway, capsys, "admin", "--db", db, "connect", "acme", "slack", "--field", "bot_token=n"
    )
    assert code == 0
    after = slack_line()
    assert after["connected_at"] > before["connected_at"]
    assert after["last_success_at"] == "None" and "last_error" not in after


async def test_over_stdio_a_refused_user_is_named_by_the_variable_and_registered_by_the_cli(
    gateway, tmp_path: Path, capsys
) -> None:
    """A host key's user over stdio comes from FASTN_GATEWAY_USER: when that user is not
    registered, the error names the variable (not the HTTP header) and the admin command that
    registers it, and that command, run as given, makes the next session's call work."""
    import shlex

    db = str(tmp_path / "gw.db")
    store = Store(make_engine(db), gateway)
    store.migrate()
    tenant = store.create_tenant("acme")
    host = store.issue_key(tenant.id, host_app=True).token
    store.dispose()
    argv = [LAUNCHER, "serve", "--transport", "stdio", "--db", db]
    env = _env(FASTN_GATEWAY_API_KEY=host, FASTN_GATEWAY_USER="zed")
    async with Client(_stdio(argv, env)) as c:
        refused = await c.call_tool("retrieve_relevant_chunks", {"query": "x"})
    assert refused.is_error
    error = json.loads(refused.content[0].text)["error"]
    assert error["code"] == "forbidden"
    message = error["message"]
    assert "FASTN_GATEWAY_USER" in message
    assert "X-Gateway-User" not in message and "POST /register" not in message
    hint = re.search(r"register it first \((.+)\)\.$", message)
    assert hint is not None, message
    command = shlex.split(hint[1])
    assert command[:3] == ["python", "-m", "fastn_gateway"]  # what the launcher stands for
    assert command[3:] == ["admin", "--db", db, "user", "register", "acme", "zed"]
    code, out, _ = run(gateway, capsys, *command[3:])
    assert code == 0 and "registered" in out
    async with Client(_stdio(argv, env)) as c:
        found = await c.call_tool("retrieve_relevant_chunks", {"query": "x"})
    assert not found.is_error, found.content


def _stdio_once(db: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, LAUNCHER, "serve", "--transport", "stdio", "--db", db],
        env=env,
        input=b"",
        capture_output=True,
        timeout=60,
    )


def test_stdio_refuses_a_bad_key(gateway, tmp_path: Path) -> None:
    db = str(tmp_path / "gw.db")
    created = subprocess.run(
        [sys.executable, LAUNCHER, "admin", "--db", db, "tenant", "create", "acme"],
        env=_env(),
        capture_output=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    for env in (_env(), _env(FASTN_GATEWAY_API_KEY="gwk_wrong")):
        proc = _stdio_once(db, env)
        assert proc.returncode == 1
        assert b"FASTN_GATEWAY_API_KEY" in proc.stderr
        assert f"admin --db {db} key issue".encode() in proc.stderr  # the hint names the db
        assert proc.stdout == b""


def test_stdio_on_a_database_that_does_not_exist_says_so_and_creates_nothing(
    gateway, tmp_path: Path
) -> None:
    typo = tmp_path / "reel.db"
    proc = _stdio_once(str(typo), _env(FASTN_GATEWAY_API_KEY="gwk_whatever"))
    assert proc.returncode == 1
    assert b"no gateway database there" in proc.stderr and str(typo).encode() in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no empty database, no key file


# ----------------------------------------------------------------------------- serve --demo (HTTP)


def _start_demo(db: str, port: int, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--demo", "--port", str(port), "--db", db, *args],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    banner = b""
    deadline = time.time() + 60
    while b"Connect an app" not in banner:
        line = proc.stderr.readline()
        if not line or time.time() > deadline:
            proc.kill()
            raise AssertionError(banner.decode(errors="replace"))
        banner += line
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("demo server did not start") from None
            time.sleep(0.05)
    return proc, banner.decode()


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return err.decode(errors="replace")


async def test_serve_demo_over_http(gateway, tmp_path: Path) -> None:
    db = str(tmp_path / "var" / "demo.db")
    port = free_port()
    proc, banner = _start_demo(db, port)
    try:
        token = TOKEN_RE.search(banner)
        assert token is not None
        assert f"http://127.0.0.1:{port}/mcp" in banner and '"Authorization": "Bearer ' in banner
        assert "FASTN_GATEWAY_API_KEY" in banner
        headers = {"Authorization": f"Bearer {token.group(0)}"}
        async with (
            httpx2.AsyncClient(headers=headers) as h,
            Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=h)) as c,
        ):
            tools = {t.name for t in (await c.list_tools()).tools}
            assert "fastn_list_integrations" in tools and "update_memory" in tools
            r = await c.call_tool(
                "update_memory", {"observations": [{"text": "demo user likes demos"}]}
            )
            assert not r.is_error
            for _ in range(5):
                assert not (await c.call_tool("fastn_list_integrations", {})).is_error
    finally:
        _stop(proc)
    assert stat.S_IMODE(Path(db + ".demo-key").stat().st_mode) == 0o600
    store = Store(make_engine(db), gateway)
    demo = store.require_tenant("demo")
    assert len(store.query_events(demo.id, type_="tool_call")) == 6  # all flushed on SIGTERM
    store.dispose()
    # a restart is idempotent and prints the same key
    proc, banner2 = _start_demo(db, free_port())
    _stop(proc)
    assert TOKEN_RE.search(banner2).group(0) == token.group(0)  # type: ignore[union-attr]


async def test_the_printed_stdio_config_reaches_the_connectors_this_server_was_pointed_at(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The stdio config `serve --demo` prints starts a server of its own: it carries this
    one's connector URLs (--base-url and the environment's), so a client using it calls the
    stand-in this server was pointed at, not the production API with the tenant's token. The
    credential key from the environment is masked, as a database password is."""
    import json

    from generator.runtime.server import open_store

    db = str(tmp_path / "var" / "demo.db")
    urls = upstream.base_urls()
    proc, banner = _start_demo(
        db,
        free_port(),
        "--base-url",
        f"slack={urls['slack']}",
        FASTN_GATEWAY_BASE_URL_SHOPIFY=urls["shopify"],
    )
    _stop(proc)
    config = json.loads(banner.split("Client config (stdio):\n", 1)[1].split("\n\n", 1)[0])
    entry = config["mcpServers"][gateway.server_name]
    assert entry["env"]["FASTN_GATEWAY_BASE_URL_SHOPIFY"] == urls["shopify"]
    store = open_store(gateway, db, environ={})
    store.connect(store.require_tenant("demo").id, "slack", {"bot_token": "xoxb-demo"})
    store.dispose()
    upstream.slack_tokens.add("xoxb-demo")
    params = StdioServerParameters(
        command=entry["command"],
        args=entry["args"],
        env={**entry["env"], "PYTHONPATH": str(GENERATED)},  # the package, not installed here
    )
    async with Client(params) as c:
        r = await c.call_tool("slack_list_channels", {})
        assert not r.is_error, r.content
    assert upstream.requests[-1] == ("/slack/conversations.list", "xoxb-demo")

    key = generate_key()
    proc, banner = _start_demo(
        str(tmp_path / "var" / "other.db"), free_port(), FASTN_GATEWAY_SECRET_KEY=key
    )
    _stop(proc)
    assert key not in banner and '"FASTN_GATEWAY_SECRET_KEY": "***"' in banner
    assert "FASTN_GATEWAY_SECRET_KEY is not shown: put it back where *** stands" in banner


def test_the_demo_banner_masks_a_password_in_a_connector_url(gateway) -> None:
    from generator.runtime.cli import demo_banner

    banner = demo_banner(
        gateway,
        "gwk_token",
        "var/x.db",
        transport="stdio",
        url="http://127.0.0.1:1/mcp",
        base_urls={"slack": "http://bob:s3cret@127.0.0.1:9917"},
        environ={"FASTN_GATEWAY_BASE_URL_GITHUB": "http://alice:hunter2@127.0.0.1:9918"},
    )
    assert "s3cret" not in banner and "hunter2" not in banner
    assert "slack=http://***@127.0.0.1:9917" in banner
    assert '"FASTN_GATEWAY_BASE_URL_GITHUB": "http://***@127.0.0.1:9918"' in banner
    assert "A connector URL's user and password are not shown" in banner


async def test_serve_demo_on_postgresql_never_prints_the_database_password(
    gateway, pg_url: str
) -> None:
    import sqlalchemy as sa

    password = sa.engine.make_url(pg_url).password
    assert password
    proc, banner = _start_demo(pg_url, free_port(), FASTN_GATEWAY_SECRET_KEY=generate_key())
    try:
        token = TOKEN_RE.search(banner)
        assert token is not None
        assert "password is not shown" in banner
        # the first line and the stdio config name the database, its password masked
        assert banner.count(":***@") == 2, banner
    finally:
        err = _stop(proc)
    assert f":{password}@" not in banner + err  # (the CI's user name is its password)


async def test_serve_announces_the_address_only_once_it_is_bound(gateway, tmp_path: Path) -> None:
    """A port in use fails before anything is announced or created; port 0 announces the port
    the system chose, which already accepts connections."""
    import re
    import socket

    db = tmp_path / "var" / "g.db"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, LAUNCHER, "serve", "--demo", "--port", str(port), "--db", str(db)],
            env=_env(),
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "--port" in err and "serving" not in err and "API key" not in err
    assert not db.exists()

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(gateway, ["admin", "--db", str(db), "tenant", "create", "acme"]) == 0
    server = subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--port", "0", "--db", str(db)],
        env=_env(),
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline().decode()
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/mcp", line)
        assert found is not None and found.group(1) != "0", line
        async with httpx2.AsyncClient() as h:
            r = await h.post(f"http://127.0.0.1:{found.group(1)}/mcp", json={}, timeout=30)
        assert r.status_code == 401
    finally:
        _stop(server)


async def test_upstream_urls_stay_out_of_the_info_log(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """At --log-level info, httpx2 logged every upstream request's URL with its query string,
    so what a model searched for (a customer's e-mail) reached the operator's log. Upstream
    requests show at debug only; the gateway's own info lines stay."""
    db = str(tmp_path / "gw.db")
    key, _kb, _tenant = _setup(gateway, db, upstream)
    marker = "created_at_min"
    server = subprocess.Popen(
        [
            *(sys.executable, LAUNCHER, "serve", "--port", "0", "--db", db),
            *("--log-level", "info", "--base-url", f"shopify={upstream.base_urls()['shopify']}"),
        ],
        env=_env(),
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline().decode()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+/mcp)", line)
        assert found is not None, line
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx2.AsyncClient(headers=headers) as h,
            Client(streamable_http_client(found.group(1), http_client=h)) as c,
        ):
            args = {"status": "open", "created_at_min": "2026-01-02T03:04:05Z"}
            r = await c.call_tool("shopify_list_orders", args)
            assert not r.is_error, r.content
    finally:
        err = line + _stop(server)
    assert upstream.requests[-1][0] == "/shopify/orders.json"
    assert "orders.json" not in err and marker not in err, err
    assert "INFO" in err  # the gateway's own info lines are there


# ----------------------------------------------------------------- the generated package


def _generated_ready() -> bool:
    runtime = GENERATED / "fastn_gateway" / "runtime"
    return all((runtime / f).exists() for f in ("server.py", "cli.py", "app.py", "resources.py"))


@pytest.mark.skipif(
    not _generated_ready(),
    reason="generated/fastn_gateway has no serving runtime yet (run gen build)",
)
async def test_generated_package_over_stdio(tmp_path: Path) -> None:
    sys.path.insert(0, str(GENERATED))
    try:
        from fastn_gateway.catalog import GATEWAY  # type: ignore[import-not-found]
        from fastn_gateway.runtime.cli import main as generated_main  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(GENERATED))
    db = str(tmp_path / "gw.db")
    env = _env()
    env["PYTHONPATH"] = str(GENERATED)
    admin = [sys.executable, "-m", "fastn_gateway", "admin", "--db", db]
    subprocess.run([*admin, "tenant", "create", "acme"], env=env, check=True, capture_output=True)
    assert (
        generated_main(
            GATEWAY, ["admin", "--db", db, "connect", "acme", "slack", "--field", "bot_token=x"]
        )
        == 0
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert generated_main(GATEWAY, ["admin", "--db", db, "key", "issue", "acme"]) == 0
    token = TOKEN_RE.search(out.getvalue())
    assert token is not None
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fastn_gateway", "serve", "--transport", "stdio", "--db", db],
        env={**env, "FASTN_GATEWAY_API_KEY": token.group(0)},
    )
    async with Client(params) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        r = await c.call_tool("fastn_list_integrations", {})
    assert {n for n in names if n.startswith("slack_")} == set(GATEWAY.connectors["slack"].tools)
    assert not any(n.startswith("shopify_") for n in names)
    assert [i["connector"] for i in r.structured_content["integrations"]] == ["slack"]


# A client's first message, in the 2025-11-25 handshake, for tests that speak JSON-RPC raw.
_INITIALIZE: dict[str, object] = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


def _raw_stdio(db: str, key: str) -> subprocess.Popen[bytes]:
    """`serve --transport stdio` on `db` as the owner of `key`, its pipes the test's."""
    return subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--transport", "stdio", "--db", db],
        env=_env(FASTN_GATEWAY_API_KEY=key),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_stdio_sigterm_flushes_records(gateway, tmp_path: Path, upstream: FakeUpstream) -> None:
    """Raw JSON-RPC over the pipes (2025-11-25 handshake), then SIGTERM: nothing is lost."""
    import json

    db = str(tmp_path / "gw.db")
    ka, _, tenant_a = _setup(gateway, db, upstream)
    proc = _raw_stdio(db, ka)
    assert proc.stdin is not None and proc.stdout is not None

    def send(msg: dict[str, object]) -> None:
        proc.stdin.write((json.dumps(msg) + "\n").encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    def reply() -> dict[str, object]:
        return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

    try:
        send(_INITIALIZE)
        assert "result" in reply()
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(1, 8):
            send(
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "tools/call",
                    "params": {"name": "fastn_list_integrations", "arguments": {}},
                }
            )
            answer = reply()
            assert answer["id"] == i and "result" in answer
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = Store(make_engine(db), gateway)
    assert len(store.query_events(tenant_a, type_="tool_call")) == 7
    store.dispose()


def test_stdio_answers_a_line_it_cannot_read(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A line that is not JSON, or is JSON but no JSON-RPC message (a lone surrogate escape,
    which JavaScript's JSON.stringify writes for a broken pair, fails the SDK's reading too),
    got no answer over stdio: the client waited for ever (audit finding). It gets JSON-RPC's
    error, id null, and the session goes on."""
    import json
    import select

    db = str(tmp_path / "gw.db")
    ka, _, _ = _setup(gateway, db, upstream)
    proc = _raw_stdio(db, ka)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(line: str) -> dict[str, Any]:
        proc.stdin.write((line + "\n").encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, f"no answer to {line!r}"
        return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

    try:
        assert "result" in ask(json.dumps(_INITIALIZE))
        bad = ask("{bad json")
        assert bad["id"] is None and bad["error"]["code"] == -32700
        surrogate = ask('{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": "\\ud800"}}')
        assert surrogate["id"] is None and surrogate["error"]["code"] in (-32700, -32600)
        no_message = ask('{"jsonrpc": "2.0", "id": 2}')
        assert no_message == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32600,
                "message": "Invalid Request: the line is not a JSON-RPC request, notification "
                "or response",
            },
        }
        assert ask('{"jsonrpc": "2.0", "id": 3, "method": "ping"}') == {
            "jsonrpc": "2.0",
            "id": 3,
            "result": {},
        }
    finally:
        proc.kill()
        proc.wait(30)


async def test_served_connections_do_not_wait_for_delayed_acks() -> None:
    """The HTTP listener is a TCP socket as asyncio's own are, so asyncio turns Nagle's
    algorithm off on each connection: with it on, every response written in two parts (head
    and body) waited for the client's delayed ACK, about 40 ms a request."""
    import asyncio
    import socket

    from generator.runtime.cli import listen

    listener = listen("127.0.0.1", 0)
    nodelay: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Probe, sock=listener)
    try:
        _reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay == [1]


def test_key_errors_name_where_the_key_comes_from(tmp_path: Path) -> None:
    """A malformed key file, or one readable by others, was reported with "hint: the key
    comes from FASTN_GATEWAY_SECRET_KEY", a variable that was not set, and the file went
    unnamed: each error now names the key's real source, and the hint only a source the
    error does not name."""
    db = tmp_path / "gw.db"
    key_file = tmp_path / "gw.db.key"
    key_file.write_text("garbage\n")
    key_file.chmod(0o600)

    def serve(**env: str) -> str:
        argv = [sys.executable, LAUNCHER, "serve", "--db", str(db), "--port", "0"]
        proc = subprocess.run(argv, env=_env(**env), capture_output=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        return proc.stderr.decode()

    err = serve()
    assert f"key in the key file {key_file} is malformed" in err, err
    assert "FASTN_GATEWAY_SECRET_KEY" not in err
    key_file.chmod(0o644)
    err = serve()
    assert f"key file {key_file} is readable by other users" in err, err
    assert "FASTN_GATEWAY_SECRET_KEY" not in err
    err = serve(FASTN_GATEWAY_SECRET_KEY="garbage")
    assert "key in FASTN_GATEWAY_SECRET_KEY is malformed" in err and "hint" not in err, err
    assert str(key_file) not in err


async def test_the_access_log_never_shows_a_query_value(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A client that put its API key in the query string (`/mcp?api_key=gwk_...`, refused: keys
    go in the Authorization header) had it printed by uvicorn's access log at --log-level info.
    The access line keeps the path and each short parameter name, never a value."""
    db = str(tmp_path / "gw.db")
    key, _kb, _tenant = _setup(gateway, db, upstream)
    server = subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--port", "0", "--db", db, "--log-level", "info"],
        env=_env(),
        stdout=subprocess.PIPE,  # uvicorn's access log
        stderr=subprocess.STDOUT,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/mcp", line)
        assert found is not None, line
        base = f"http://127.0.0.1:{found.group(1)}"
        async with httpx2.AsyncClient() as h:
            r = await h.post(f"{base}/mcp?api_key={key}&x=1", json={}, timeout=30)
            assert r.status_code == 401
            r = await h.get(f"{base}/healthz?token=tok-secret-1&{key}", timeout=30)
            assert r.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        err = line + server.communicate(timeout=30)[0].decode()
    assert key not in err and "tok-secret-1" not in err, err
    assert '"POST /mcp?api_key=***&x=*** HTTP/1.1" 401' in err, err
    assert '"GET /healthz?token=***&*** HTTP/1.1" 200' in err, err


def _serve_http(
    db: str, *args: str, preexec_fn: Any = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`serve` on a free port (its log, stdout and stderr, on the process's stdout) and its
    base URL, once it listens."""
    server = subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--port", "0", "--db", db, *args],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    assert server.stdout is not None
    line = server.stdout.readline().decode()
    found = re.search(r"serving (http://127\.0\.0\.1:\d+)/mcp", line)
    if found is None:
        server.kill()
        raise AssertionError(line + server.communicate()[0].decode())
    return server, found.group(1)


def _stop_merged(server: subprocess.Popen[bytes]) -> str:
    server.send_signal(signal.SIGTERM)
    try:
        return server.communicate(timeout=30)[0].decode()
    except subprocess.TimeoutExpired:
        server.kill()
        raise


async def test_records_that_cannot_be_written_make_the_gateway_unhealthy_not_noisy(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A full disk (here a file size limit, which stops root too): the recorder logged a full
    traceback four times a second, /healthz said ok, and the history and usage tools answered
    internal_error. Now: one traceback, /healthz 503 with the reason and the backlog, the
    read tools answer from what is stored with a note, and once writing works again one line
    says so, /healthz is 200 and every call is stored."""
    import resource

    db = str(tmp_path / "gw.db")
    key, _kb, tenant = _setup(gateway, db, upstream)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("gw.db")]
    limit = max(p.stat().st_size for p in files) + 256 * 1024  # startup fits, calls do not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    server, base = _serve_http(db, "--log-level", "info", preexec_fn=small_files)
    calls = 0
    try:
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as h,
            Client(streamable_http_client(f"{base}/mcp", http_client=h)) as c,
        ):
            for _ in range(2000):  # each summary call writes the calls before it
                r = await c.call_tool("fastn_get_usage_summary", {})
                calls += 1
                assert not r.is_error, r.content
                if len(r.content) > 1:
                    break
            notes = [b.text for b in r.content[1:] if b.type == "text"]
            assert notes and "cannot store new records just now" in notes[0], r.content
            events = await c.call_tool("fastn_get_event_history", {"limit": 5})
            calls += 1
            assert not events.is_error and len(events.content) == 2, events.content
            health = await h.get(f"{base}/healthz")
            assert health.status_code == 503, health.text
            body = health.json()
            assert body["status"] == "unavailable" and body["unwritten_records"] > 0, body
            assert body["reason"].startswith("records cannot be written: "), body
            time.sleep(1.5)  # six more failed background writes, not logged
            resource.prlimit(  # the disk has room again
                server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2
            )
            for _ in range(100):
                health = await h.get(f"{base}/healthz")
                if health.status_code == 200:
                    break
                await anyio.sleep(0.1)
            assert health.status_code == 200, health.text
            r = await c.call_tool("fastn_get_usage_summary", {})
            calls += 1
            assert not r.is_error and len(r.content) == 1, r.content
            # every call before this one is counted (it is recorded once it has answered)
            assert r.structured_content["calls"] == calls - 1  # type: ignore[index]
    finally:
        log = _stop_merged(server)
    assert log.count("ERROR:") == 1 and "Traceback" in log, log  # one line, one traceback
    assert log.count("records cannot be written") == 1, log
    assert log.count("records are written again") == 1, log
    assert "could not be written at shutdown" not in log
    store = Store(make_engine(db), gateway)
    assert len(store.query_events(tenant, type_="tool_call", limit=5000)) == calls
    store.dispose()


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_serve_refuses_a_read_only_database(
    gateway, tmp_path: Path, upstream: FakeUpstream, transport: str
) -> None:
    """On a database file it could read but not write, `serve` said it was serving, then
    kept every call's record in memory (and logged a traceback four times a second): it
    refuses to start now, saying the database is read-only. As root, which writes through
    file modes, the file is marked immutable (`chattr +i`), which root obeys too."""
    from generator.runtime.server import GatewayRuntime

    db = tmp_path / "gw.db"
    key, _kb, _tenant = _setup(gateway, str(db), upstream)
    GatewayRuntime.open(gateway, str(db), environ={}).close_sync()  # every table exists
    if os.geteuid() == 0:
        marked = subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False)
        if marked.returncode != 0:
            pytest.skip(f"as root, and chattr +i is refused here: {marked.stderr!r}")
        undo = ["chattr", "-i", str(db)]
    else:
        db.chmod(0o444)
        undo = ["chmod", "600", str(db)]
    try:
        argv = [sys.executable, LAUNCHER, "serve", "--transport", transport, "--db", str(db)]
        proc = subprocess.run(
            [*argv, "--port", "0"] if transport == "http" else argv,
            env=_env(FASTN_GATEWAY_API_KEY=key),
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(undo, check=True)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "error: the database is read-only (attempt to write a readonly database)" in err, err
    assert "serving" not in err and "Traceback" not in err


def test_serve_on_a_read_only_directory_says_the_database_is_read_only(
    gateway, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A database file whose directory cannot be written (a read-only mount), with no -wal
    and -shm files beside it: SQLite cannot create them, and `serve` said only "unable to
    open database file". It says the database is read-only, and why. As root, the directory
    is marked immutable (`chattr +i`), which root obeys too."""
    import sqlite3

    from generator.runtime.server import GatewayRuntime

    folder = tmp_path / "mnt"
    folder.mkdir()
    db = folder / "gw.db"
    key, _kb, _tenant = _setup(gateway, str(db), upstream)
    runtime = GatewayRuntime.open(gateway, str(db), environ={})
    runtime.close_sync()
    runtime.store.dispose()
    sqlite3.connect(db).close()  # the last connection: SQLite removes -wal and -shm
    assert sorted(p.name for p in folder.iterdir()) == ["gw.db", "gw.db.key"]
    if os.geteuid() == 0:
        marked = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if marked.returncode != 0:
            pytest.skip(f"as root, and chattr +i is refused here: {marked.stderr!r}")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "700", str(folder)]
    try:
        proc = subprocess.run(
            [sys.executable, LAUNCHER, "serve", "--transport", "stdio", "--db", str(db)],
            env=_env(FASTN_GATEWAY_API_KEY=key),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(undo, check=True)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith(
        f"error: the database is read-only (unable to open database file): its directory "
        f"{folder} cannot be written"
    ), err
    assert "make the directory writable" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("delay", "outcome", "tool"),
    [
        (0.4, "ok", "slack_list_channels"),
        (30.0, "cancelled", "slack_list_channels"),
        (30.0, "cancelled", "slack_send_message"),
    ],
)
def test_stdio_sigterm_records_and_answers_the_call_in_flight(
    gateway, tmp_path: Path, upstream: FakeUpstream, delay: float, outcome: str, tool: str
) -> None:
    """SIGTERM while a call waited for its upstream: the process exited at once, and the call
    was lost (no answer, no event, no usage, though the upstream had the request). A call that
    ends within the short grace is answered and recorded as it ended; one that does not is
    stopped, answered `cancelled` and recorded so; the process still exits promptly. A
    read-only tool's `cancelled` is retryable; that of a tool that may change data is not, and
    says it may have taken effect."""
    import json

    db = str(tmp_path / "gw.db")
    ka, _, tenant_a = _setup(gateway, db, upstream)
    upstream.slack_delay = delay
    proc = subprocess.Popen(
        [sys.executable, LAUNCHER, "serve", "--transport", "stdio", "--db", db]
        + ["--base-url", f"slack={upstream.base_urls()['slack']}"],
        env=_env(FASTN_GATEWAY_API_KEY=ka),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def send(msg: dict[str, object]) -> None:
        proc.stdin.write((json.dumps(msg) + "\n").encode())  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    try:
        send(_INITIALIZE)
        assert "result" in json.loads(proc.stdout.readline())
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        before = len(upstream.requests)
        arguments = {"channel": "C1", "text": "hi"} if tool == "slack_send_message" else {}
        call = {"name": tool, "arguments": arguments}
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        deadline = time.monotonic() + 30
        while len(upstream.requests) == before:  # the upstream has the request
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        proc.wait(30)  # stdin stays open: its end would cancel the call by itself
        took = time.monotonic() - signalled
        out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
        upstream.slack_delay = 0.0
    assert proc.returncode == 0, err
    assert took < 3.5, took  # within the SDK client's 2 s + its kill's 2 s
    answer = json.loads(out.decode().splitlines()[0])
    assert answer["id"] == 2, answer
    result = answer.get("result")
    assert result is not None, answer
    if outcome == "ok":
        assert not result["isError"], result
    else:
        assert result["isError"], result
        error = json.loads(result["content"][0]["text"])["error"]
        assert error["code"] == "cancelled", error
        if tool == "slack_list_channels":
            assert error["retryable"] and "call it again" in error["message"], error
            assert "taken effect" not in error["message"], error
        else:
            assert not error["retryable"], error
            assert "may or may not have taken effect upstream" in error["message"], error
    store = Store(make_engine(db), gateway)
    [event] = store.query_events(tenant_a, type_="tool_call")
    assert event.tool == tool
    assert (event.status, event.error_code) == (
        ("ok", None) if outcome == "ok" else ("error", "cancelled")
    )
    month = period_bounds("month", event.at)[0]
    assert store.usage_totals(tenant_a, month)[0] == 1  # the call ran: it counts
    store.dispose()

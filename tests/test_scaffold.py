"""`gen new connector`: the scaffold compiles as it is, its example tool calls a real HTTP
stand-in with the tenant's credentials and pages, and a scaffold that would break the project
writes nothing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import AS_A_USER, MODES_HOLD, ROOT, make_project, options

from generator import api, scaffold
from generator.cli import main
from generator.runtime.executor import CallContext, ConnectorExecutor
from tests.runtime.upstreams import Received, Reply, Upstream

ITEMS = [{"id": f"it_{i}", "name": f"Item {i}"} for i in range(5)]
CREDENTIALS: dict[str, dict[str, str]] = {
    "bearer": {"token": "tok-acme-1234567"},
    "api_key": {"api_key": "key-acme-1234567"},
    "basic": {"username": "ops", "password": "pw-acme-1234567"},
    "oauth2": {"access_token": "oat-acme-1234567"},
    "none": {},
}


def _authorised(auth: str, req: Received) -> bool:
    creds = CREDENTIALS[auth]
    if auth in ("bearer", "oauth2"):
        token = creds.get("token") or creds["access_token"]
        return req.headers.get("authorization") == f"Bearer {token}"
    if auth == "api_key":
        return req.headers.get("x-api-key") == creds["api_key"]
    if auth == "basic":
        pair = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        return req.headers.get("authorization") == f"Basic {pair}"
    return "authorization" not in req.headers


class ItemsApi(Upstream):
    """GET /v2/items?limit=&cursor=, answering {"data": [...], "next_cursor": ...}."""

    auth = "bearer"

    def handle(self, req: Received) -> Reply:
        if not _authorised(self.auth, req):
            return Reply(401, {"error": {"message": "bad credentials"}})
        if req.method != "GET" or req.path != "/v2/items":
            return Reply(404, {"error": {"message": "no such route"}})
        start = int(req.args.get("cursor", "0"))
        size = int(req.args.get("limit", "20"))
        end = start + size
        return Reply(200, {"data": ITEMS[start:end], "next_cursor": str(end) if end < 5 else None})


@pytest.fixture(scope="module")
def items_api() -> Any:
    server = ItemsApi()
    server.start()
    yield server
    server.stop()


def _new(root: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["new", "connector", *args, "--project", str(root)])


async def _every_item(ex: ConnectorExecutor, tool: Any, creds: dict[str, str]) -> list[str]:
    """The ids of every item the example tool lists, two a page, following next_cursor."""
    seen: list[str] = []
    cursor = None
    try:
        for _ in range(4):
            args = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            ctx = CallContext(tenant_id="t", user_id=None)
            out = (await ex.call(tool, args, credentials=creds, ctx=ctx)).output
            seen += [item["id"] for item in out["items"]]
            cursor = out["next_cursor"]
            if cursor is None:
                break
    finally:
        await ex.aclose()
    return seen


@pytest.mark.parametrize("auth", sorted(CREDENTIALS))
async def test_scaffold_builds_and_its_tool_pages_through_a_real_upstream(
    tmp_path: Path, items_api: ItemsApi, auth: str
) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    result = _new(root, "acme_crm", "--base-url", "https://api.acme.test/v2/", "--auth", auth)
    assert result.exit_code == 0, result.output
    assert "wrote manifests/connectors/acme_crm.yaml" in result.output
    spec, diagnostics = api.gateway_spec(options(root))
    assert spec is not None, diagnostics
    tool = spec.tools["acme_crm_list_items"]
    assert spec.connectors["acme_crm"].base_url == "https://api.acme.test/v2"

    items_api.reset()
    items_api.auth = auth
    ex = ConnectorExecutor(spec, base_urls={"acme_crm": items_api.url + "/v2"})
    assert await _every_item(ex, tool, CREDENTIALS[auth]) == [item["id"] for item in ITEMS]


class GraphQLItems(Upstream):
    """POST /v2/graphql answering the scaffold's `ListItems` document: `items(first, after)`
    with `nodes` and `pageInfo`, arguments read from the variables only."""

    def handle(self, req: Received) -> Reply:
        if req.headers.get("authorization") != f"Bearer {CREDENTIALS['bearer']['token']}":
            return Reply(401, {"errors": [{"message": "bad credentials"}]})
        if req.method != "POST" or req.path != "/v2/graphql":
            return Reply(404, {"errors": [{"message": "no such route"}]})
        body = req.json()
        if not body["query"].startswith("query ListItems($first: Int!, $after: String) {"):
            return Reply(200, {"errors": [{"message": "unknown document"}]})
        v = body["variables"]
        start = int(v.get("after") or 0)
        end = start + int(v["first"])
        page = {"hasNextPage": end < len(ITEMS), "endCursor": str(min(end, len(ITEMS)))}
        return Reply(200, {"data": {"items": {"nodes": ITEMS[start:end], "pageInfo": page}}})


async def test_a_graphql_scaffold_builds_and_its_tool_pages_through_a_real_upstream(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    result = _new(
        root, "acme_gql", "--base-url", "https://api.acme.test/v2", "--graphql", "/graphql"
    )
    assert result.exit_code == 0, result.output
    spec, diagnostics = api.gateway_spec(options(root))
    assert spec is not None, diagnostics
    tool = spec.tools["acme_gql_list_items"]
    assert tool.http is not None and tool.http.graphql is not None
    with GraphQLItems() as upstream:
        ex = ConnectorExecutor(spec, base_urls={"acme_gql": upstream.url + "/v2"})
        seen = await _every_item(ex, tool, CREDENTIALS["bearer"])
    assert seen == [item["id"] for item in ITEMS]
    bad = _new(root, "other", "--base-url", "https://x.test", "--graphql", "graphql")
    assert bad.exit_code == 2 and "the GraphQL endpoint's path" in bad.output


def test_the_scaffold_builds_into_generated(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    title = 'Acme: "CRM" # v2'  # YAML-significant characters stay text
    assert (
        _new(root, "acme", "--base-url", "https://api.acme.test", "--title", title).exit_code == 0
    )
    assert api.build(options(root)).ok
    tools = json.loads((root / "generated" / "tools.json").read_text(encoding="utf-8"))["tools"]
    made = next(t for t in tools if t["name"] == "acme_list_items")
    assert made["title"] == f"List {title} items"


def test_the_schema_comment_names_the_projects_schema_or_its_id(tmp_path: Path) -> None:
    """Never a path into the generator's install: the file is committed."""
    outside = make_project(tmp_path / "elsewhere", copy_defaults=True)
    assert _new(outside, "acme", "--base-url", "https://api.acme.test").exit_code == 0
    first = (outside / "manifests" / "connectors" / "acme.yaml").read_text().splitlines()[0]
    assert first == (
        "# yaml-language-server: $schema=https://mcpforge.dev/schema/manifest.v1.schema.json"
    )
    target = ROOT / "manifests" / "connectors" / "acme.yaml"  # this repository's layout
    assert (
        scaffold.schema_reference(target, ROOT) == "../../generator/schema/manifest.v1.schema.json"
    )


def test_a_scaffold_that_would_break_the_project_writes_nothing(tmp_path: Path) -> None:
    root = make_project(tmp_path, copy_defaults=True)
    connectors = root / "manifests" / "connectors"
    (connectors / "slack.yaml").rename(connectors / "chat.yaml")
    before = sorted(p.name for p in connectors.iterdir())
    taken = _new(root, "slack", "--base-url", "https://slack.com/api")
    assert taken.exit_code == 1
    assert "GEN211" in taken.output and "nothing written" in taken.output
    assert sorted(p.name for p in connectors.iterdir()) == before

    # An existing file is an error of the project, not of the command line: 1, not 2.
    exists = _new(root, "github", "--base-url", "https://api.github.com")
    assert exists.exit_code == 1
    assert exists.output == "error: manifests/connectors/github.yaml exists; edit it instead\n"
    for bad in (["Bad-Name", "--base-url", "https://x.test"], ["ok", "--base-url", "ftp://x"]):
        assert _new(root, *bad).exit_code == 2
    assert sorted(p.name for p in connectors.iterdir()) == before


async def test_base_url_placeholders_become_the_tenants_host_fields(
    tmp_path: Path, items_api: ItemsApi
) -> None:
    """`https://{shop}.example.com`: the scaffold declares `shop` as a non-secret credential
    field, so the file compiles, and each tenant's own value picks its host."""
    root = make_project(tmp_path, copy_defaults=True)
    url = "https://{shop}.acme.test/{region}/v2"
    assert _new(root, "acme_shop", "--base-url", url, "--auth", "none").exit_code == 0
    spec, diagnostics = api.gateway_spec(options(root))
    assert spec is not None, diagnostics
    fields = {f.name: f.secret for f in spec.connectors["acme_shop"].auth.fields}
    assert fields == {"shop": False, "region": False}

    items_api.reset()
    items_api.auth = "none"
    # The stand-in serves /v2/items: the tenant's {region} must fill the base URL to reach it.
    ex = ConnectorExecutor(spec, base_urls={"acme_shop": items_api.url + "/{region}"})
    try:
        ctx = CallContext(tenant_id="t", user_id=None)
        tool = spec.tools["acme_shop_list_items"]
        creds = {"shop": "corner", "region": "v2"}
        out = (await ex.call(tool, {"limit": 5}, credentials=creds, ctx=ctx)).output
    finally:
        await ex.aclose()
    assert [item["id"] for item in out["items"]] == [item["id"] for item in ITEMS]


def test_a_missing_manifest_directory_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(
        main, ["new", "connector", "x", "--base-url", "https://x.test", "--manifests", str(missing)]
    )
    assert result.exit_code == 1  # as `gen validate` and `gen build` exit (GEN005)
    assert f"the manifest directory {missing} does not exist" in result.output
    assert not missing.exists()

    # A project without a gateway manifest: refused, and the connectors/ directory the
    # attempt made is gone again.
    (tmp_path / "bare" / "manifests").mkdir(parents=True)
    refused = _new(tmp_path / "bare", "x", "--base-url", "https://x.test")
    assert refused.exit_code == 1 and "GEN210" in refused.output
    assert list((tmp_path / "bare" / "manifests").iterdir()) == []


def test_a_name_the_file_system_refuses_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """An editor's link to nowhere under the name (FileExistsError), a file named connectors
    and a connectors/ directory that cannot be written (PermissionError) were tracebacks."""
    root = make_project(tmp_path, copy_defaults=True)
    connectors = root / "manifests" / "connectors"
    (connectors / "acme.yaml").symlink_to("nowhere")
    dangling = _new(root, "acme", "--base-url", "https://acme.test")
    assert dangling.exit_code == 1, dangling.output
    assert dangling.output == "error: manifests/connectors/acme.yaml exists; edit it instead\n"
    assert (connectors / "acme.yaml").is_symlink() and not (tmp_path / "nowhere").exists()

    if MODES_HOLD:
        connectors.chmod(0o555)
        try:
            proc = subprocess.run(
                [*AS_A_USER, sys.executable, "-m", "generator", "new", "connector", "acme2"]
                + ["--base-url", "https://acme.test"],
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            connectors.chmod(0o755)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == (
            "error: cannot write manifests/connectors/acme2.yaml: Permission denied\n"
        )

    other = make_project(tmp_path / "other", copy_defaults=True)
    for p in sorted((other / "manifests" / "connectors").iterdir()):
        p.unlink()
    (other / "manifests" / "connectors").rmdir()
    (other / "manifests" / "connectors").write_text("not a directory\n")
    blocked = _new(other, "acme", "--base-url", "https://acme.test")
    assert blocked.exit_code == 1, blocked.output
    assert blocked.output == (
        "error: manifests/connectors is not a directory: cannot write "
        "manifests/connectors/acme.yaml\n"
    )


def test_a_scaffold_that_would_not_compile_never_appears(tmp_path: Path) -> None:
    """The file was written first and removed after the project failed to compile with it:
    Ctrl-C meanwhile left it. Now it is compiled in memory; watched while the command runs,
    the file never exists."""
    root = make_project(tmp_path, copy_defaults=True)
    target = root / "manifests" / "connectors" / "hubspot2.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "new", "connector", "hubspot2"]
        + ["--base-url", "https://{bad"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = looks = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen += os.path.lexists(target)
        looks += 1
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1 and "GEN226" in err, err
    assert looks > 100 and seen == 0
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "github.yaml",
        "hubspot.yaml",
        "shopify.yaml",
        "slack.yaml",
    ]

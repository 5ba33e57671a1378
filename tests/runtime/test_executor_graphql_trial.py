"""Two more GraphQL connectors added in YAML only, run by the executor against stand-ins on
127.0.0.1: tests/data/connectors/github_graphql.yaml (GitHub's GraphQL API v4) and
tests/data/connectors/linear.yaml (Linear's GraphQL API).

As in test_executor_graphql.py, each stand-in answers only the manifest's documents, byte for
byte, and reads every argument from the variables. Each reports failures as its API does:

* GitHub: a bearer token, HTTP 401 `{"message": "Bad credentials"}`; HTTP 200 with `errors`
  entries that carry a `type` (`NOT_FOUND`, `RATE_LIMITED`, and `FORBIDDEN` for each search
  result in an organisation whose SAML single sign-on the token is not authorised for, which
  comes back null beside the others) and `x-ratelimit-remaining: 0`
  with `x-ratelimit-reset` (epoch seconds) on the primary rate limit; HTTP 403 with
  `retry-after` on a secondary rate limit.
* Linear: the API key as the whole `Authorization` header; `errors[].extensions.code`, with
  HTTP 400 for `AUTHENTICATION_ERROR` and `RATELIMITED`, and HTTP 200 for an entity it cannot
  find (`INVALID_INPUT`, `data: null`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from generator.runtime import catalog as c
from generator.runtime.crypto import CredentialCipher
from generator.runtime.errors import (
    NOT_FOUND,
    RATE_LIMITED,
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_ERROR,
)
from generator.runtime.executor import (
    ConnectorExecutor,
)
from generator.runtime.store import Store, make_engine
from tests.runtime.support import ROOT, Sleeps, call, catalog_with, fails
from tests.runtime.upstreams import Fault, Received, Reply, Upstream

DATA = ROOT / "tests" / "data" / "connectors"
GITHUB_MANIFEST = DATA / "github_graphql.yaml"
LINEAR_MANIFEST = DATA / "linear.yaml"
OPERATION = re.compile(r"\s*(query|mutation)\s+(\w+)")
# Text that would end a string literal and start a mutation, were it written into the document.
HOSTILE = (
    '"} } mutation { addComment(input: {subjectId: "I_1", body: "pwned"}) { clientMutationId } } #{'
)


def _documents(manifest: Path) -> dict[str, str]:
    """Operation name -> the document the manifest declares for it."""
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    docs = [cap["http"]["graphql"]["query"] for cap in data["capabilities"]]
    return {OPERATION.match(d)[2]: d for d in docs}  # type: ignore[index]


def gql_error(message: str, **fields: Any) -> dict[str, Any]:
    return {"message": message, "locations": [{"line": 2, "column": 3}], **fields}


class GraphQLStandIn(Upstream):
    """What both stand-ins share: one POST endpoint, JSON only, exactly the manifest's
    documents, `{query, variables}` and nothing else in the body."""

    ENDPOINT = "/graphql"

    def __init__(self, manifest: Path) -> None:
        super().__init__()
        self.documents = _documents(manifest)

    def authorised(self, req: Received) -> Reply | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def operation(self, name: str, variables: dict[str, Any]) -> Reply:  # pragma: no cover
        raise NotImplementedError

    def handle(self, req: Received) -> Reply:
        if req.method != "POST" or not req.path.endswith(self.ENDPOINT):
            return Reply(404, {"message": "Not Found"})
        refused = self.authorised(req)
        if refused is not None:
            return refused
        if not req.headers.get("content-type", "").startswith("application/json"):
            return Reply(415, {"message": "Content-Type must be application/json"})
        body = req.json()
        if set(body) != {"query", "variables"}:
            return Reply(400, {"errors": [gql_error(f"unexpected keys: {sorted(body)}")]})
        op = OPERATION.match(body["query"])
        if op is None or self.documents.get(op[2]) != body["query"]:
            return Reply(400, {"errors": [gql_error("not one of the connector's documents")]})
        return self.operation(op[2], body["variables"])


# ----------------------------------------------------------------------------------- GitHub

GH_TOKEN = "github_pat_11AAAA_trial_secret"
GH_CREDS = {"token": GH_TOKEN}


def _issue(number: int, *, repo: str = "octo/app", state: str = "OPEN") -> dict[str, Any]:
    return {
        "id": f"I_kwDO{number:04d}",
        "number": number,
        "title": f"Issue {number}",
        "url": f"https://github.com/{repo}/issues/{number}",
        "state": state,
        "repository": {"nameWithOwner": repo},
        "labels": ["bug"] if number % 2 else [],
    }


class GitHubGraphQL(GraphQLStandIn):
    """GitHub's GraphQL API: `SearchIssues` (qualifiers `repo:`, `is:open`, `is:closed`,
    `label:`; anything else matches no issue), `GetRepository` (`octo/app` only) and
    `AddComment` (on an issue's node id). `rate_limited` answers that many requests as the
    primary rate limit does, `reset_in` seconds before it resets."""

    DATA = ("issues", "comments")

    def __init__(self) -> None:
        super().__init__(GITHUB_MANIFEST)
        self.issues = [_issue(n) for n in range(1, 8)] + [_issue(8, state="CLOSED")]
        self.sso_protected: set[str] = set()  # repositories the token may not read
        # Issue number -> a field the resolver failed on. GitHub nulls a nullable field
        # (`repository`; `state` here, as if it were nullable) and, for a non-null one
        # (`title`), the whole node.
        self.failing_field: dict[int, str] = {}
        self.comments: list[dict[str, Any]] = []
        self.rate_limited = 0
        self.reset_in = 3
        self.snapshot()

    def reset(self) -> None:
        super().reset()
        self.rate_limited = 0
        self.reset_in = 3
        self.sso_protected = set()
        self.failing_field = {}

    def authorised(self, req: Received) -> Reply | None:
        if req.headers.get("authorization") != f"Bearer {GH_TOKEN}":
            return Reply(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/graphql",
                },
            )
        return None

    def operation(self, name: str, variables: dict[str, Any]) -> Reply:
        if self.rate_limited:
            self.rate_limited -= 1
            return Reply(
                200,
                {
                    "errors": [
                        {
                            "type": "RATE_LIMITED",
                            "message": "API rate limit exceeded for user ID 1.",
                        }
                    ]
                },
                headers={
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(int(time.time()) + self.reset_in),
                },
            )
        if name == "SearchIssues":
            return self._search(variables)
        if name == "GetRepository":
            return self._repository(variables)
        return self._add_comment(variables)

    def _search(self, v: dict[str, Any]) -> Reply:
        rows = [i for i in self.issues]
        for word in v["query"].split():
            qualifier, _, value = word.partition(":")
            if qualifier == "repo":
                rows = [i for i in rows if i["repository"]["nameWithOwner"] == value]
            elif word in ("is:open", "is:closed"):
                rows = [i for i in rows if i["state"] == value.upper()]
            elif qualifier == "label":
                rows = [i for i in rows if value in i["labels"]]
            else:
                rows = [i for i in rows if word in i["title"]]
        start = int(v["after"].removeprefix("Y3Vyc29yOj")) if v.get("after") else 0
        page = rows[start : start + v["first"]]
        end = start + len(page)
        fields = ("id", "number", "title", "url", "state", "repository")
        nodes: list[dict[str, Any] | None] = []
        errors: list[dict[str, Any]] = []
        for n, i in enumerate(page):
            org = i["repository"]["nameWithOwner"].partition("/")[0]
            if i["repository"]["nameWithOwner"] in self.sso_protected:
                nodes.append(None)
                errors.append(
                    gql_error(
                        f"Resource protected by organization SAML enforcement. You must grant "
                        f"your Personal Access token access to the `{org}` organization.",
                        type="FORBIDDEN",
                        path=["search", "nodes", n],
                    )
                )
            elif i["number"] in self.failing_field:
                failed = self.failing_field[i["number"]]
                node: dict[str, Any] | None = {k: i[k] for k in fields}
                if failed in ("repository", "state"):
                    node[failed] = None  # type: ignore[index]
                else:
                    node = None
                nodes.append(node)
                errors.append(
                    gql_error(
                        "Something went wrong while executing your query.",
                        type="INTERNAL",
                        path=["search", "nodes", n, failed],
                    )
                )
            else:
                nodes.append({k: i[k] for k in fields})
        answer: dict[str, Any] = {
            "data": {
                "search": {
                    "issueCount": len(rows),
                    "nodes": nodes,
                    "pageInfo": {
                        "hasNextPage": end < len(rows),
                        "endCursor": f"Y3Vyc29yOj{end}" if page else None,
                    },
                }
            }
        }
        return Reply(200, answer | ({"errors": errors} if errors else {}))

    def _repository(self, v: dict[str, Any]) -> Reply:
        if (v["owner"], v["name"]) != ("octo", "app"):
            return Reply(
                200,
                {
                    "data": {"repository": None},
                    "errors": [
                        gql_error(
                            "Could not resolve to a Repository with the name "
                            f"'{v['owner']}/{v['name']}'.",
                            type="NOT_FOUND",
                            path=["repository"],
                        )
                    ],
                },
            )
        open_issues = sum(1 for i in self.issues if i["state"] == "OPEN")
        return Reply(
            200,
            {
                "data": {
                    "repository": {
                        "id": "R_kgDOapp",
                        "nameWithOwner": "octo/app",
                        "description": None,
                        "url": "https://github.com/octo/app",
                        "stargazerCount": 42,
                        "isPrivate": False,
                        "defaultBranchRef": {"name": "main"},
                        "issues": {"totalCount": open_issues},
                    }
                }
            },
        )

    def _add_comment(self, v: dict[str, Any]) -> Reply:
        given = v["input"]
        if set(given) != {"subjectId", "body"}:
            return Reply(200, {"errors": [gql_error(f"unexpected input fields {sorted(given)}")]})
        if not any(i["id"] == given["subjectId"] for i in self.issues):
            return Reply(
                200,
                {
                    "data": {"addComment": None},
                    "errors": [
                        gql_error(
                            "Could not resolve to a node with the global id of "
                            f"'{given['subjectId']}'",
                            type="NOT_FOUND",
                            path=["addComment"],
                        )
                    ],
                },
            )
        n = len(self.comments) + 1
        self.comments.append(given)
        node = {
            "id": f"IC_kwDO{n:04d}",
            "url": f"https://github.com/octo/app/issues/1#issuecomment-{n}",
        }
        return Reply(200, {"data": {"addComment": {"commentEdge": {"node": node}}}})


# ----------------------------------------------------------------------------------- Linear

LINEAR_KEY = "lin_api_trial_secret_0123456789"
LINEAR_CREDS = {"api_key": LINEAR_KEY}
ENG = "9cfb482a-81e3-4154-b5b9-2c805e70a02d"


def _linear_issue(n: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=n)),
        "identifier": f"ENG-{n}",
        "title": f"Linear issue {n}",
        "url": f"https://linear.app/acme/issue/ENG-{n}",
        "priority": n % 5,
        "state": {"name": "In Progress" if n % 3 == 0 else "Todo"},
        "team": "ENG",
    }


class LinearGraphQL(GraphQLStandIn):
    """Linear's GraphQL API: `ListIssues` (an `IssueFilter` on the team key and the state name,
    with `eq` only) and `CreateIssue` (team `ENG` only). `rate_limited` answers that many
    requests with Linear's RATELIMITED."""

    DATA = ("issues",)

    def __init__(self) -> None:
        super().__init__(LINEAR_MANIFEST)
        self.issues = [_linear_issue(n) for n in range(1, 11)]
        self.rate_limited = 0
        self.snapshot()

    def reset(self) -> None:
        super().reset()
        self.rate_limited = 0

    def authorised(self, req: Received) -> Reply | None:
        if req.headers.get("authorization") != LINEAR_KEY:
            error = gql_error(
                "Authentication required, not authenticated",
                extensions={
                    "type": "authentication error",
                    "code": "AUTHENTICATION_ERROR",
                    "statusCode": 401,
                    "userError": True,
                },
            )
            return Reply(400, {"errors": [error]})
        return None

    def operation(self, name: str, variables: dict[str, Any]) -> Reply:
        if self.rate_limited:
            self.rate_limited -= 1
            error = gql_error(
                "Rate limit exceeded", extensions={"code": "RATELIMITED", "type": "Ratelimited"}
            )
            reset_ms = str(int(time.time() * 1000) + 2000)
            return Reply(400, {"errors": [error]}, headers={"x-ratelimit-requests-reset": reset_ms})
        if name == "ListIssues":
            return self._list(variables)
        return self._create(variables)

    def _list(self, v: dict[str, Any]) -> Reply:
        first = v["first"]
        if not isinstance(first, int) or isinstance(first, bool):
            return Reply(
                400, {"errors": [gql_error(f"Variable $first got invalid value {first!r}")]}
            )
        rows = list(reversed(self.issues))  # most recently updated first
        for field, where in (v.get("filter") or {}).items():
            if field == "team":
                rows = [r for r in rows if r["team"] == where["key"]["eq"]]
            elif field == "state":
                rows = [r for r in rows if r["state"]["name"] == where["name"]["eq"]]
            else:
                return Reply(400, {"errors": [gql_error(f"Unknown filter field {field}")]})
        start = int(v["after"]) if v.get("after") else 0
        page = rows[start : start + first]
        end = start + len(page)
        fields = ("id", "identifier", "title", "url", "priority", "state")
        return Reply(
            200,
            {
                "data": {
                    "issues": {
                        "nodes": [{k: r[k] for k in fields} for r in page],
                        "pageInfo": {
                            "hasNextPage": end < len(rows),
                            "endCursor": str(end) if page else None,
                        },
                    }
                }
            },
        )

    def _create(self, v: dict[str, Any]) -> Reply:
        given = v["input"]
        if given.get("teamId") != ENG:
            error = gql_error(
                "Entity not found: Team",
                extensions={"code": "INVALID_INPUT", "type": "invalid input", "userError": True},
            )
            return Reply(200, {"errors": [error], "data": None})
        issue = _linear_issue(len(self.issues) + 1) | {"title": given["title"], "input": given}
        self.issues.append(issue)
        out = {k: issue[k] for k in ("id", "identifier", "url")}
        return Reply(200, {"data": {"issueCreate": {"success": True, "issue": out}}})


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> c.GatewaySpec:
    return catalog_with(tmp_path_factory.mktemp("graphql_trial"), GITHUB_MANIFEST, LINEAR_MANIFEST)


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubGraphQL]:
    with GitHubGraphQL() as server:
        yield server


@pytest.fixture(scope="module")
def linear() -> Iterator[LinearGraphQL]:
    with LinearGraphQL() as server:
        yield server


@pytest.fixture
async def executor(
    catalog: c.GatewaySpec, github: GitHubGraphQL, linear: LinearGraphQL, sleeps: Sleeps
) -> AsyncIterator[ConnectorExecutor]:
    github.reset()
    linear.reset()
    base = {"github_graphql": github.url + "/gh", "linear": linear.url + "/linear"}
    ex = ConnectorExecutor(catalog, base_urls=base, sleep=sleeps)
    yield ex
    await ex.aclose()


SEARCH = "github_graphql_search_issues"
REPO = "github_graphql_get_repository"
COMMENT = "github_graphql_add_comment"
LIST = "linear_list_issues"
CREATE = "linear_create_issue"


# ------------------------------------------------------------------------------ GitHub tests


async def test_github_search_pages_follow_end_cursor(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    seen: list[int] = []
    counts: set[int] = set()
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"query": "repo:octo/app is:open", "limit": 3}
        args |= {"cursor": cursor} if cursor else {}
        out = (await call(executor, catalog, SEARCH, GH_CREDS, **args)).output
        seen += [i["number"] for i in out["issues"]]
        counts.add(out["issue_count"])
        cursor = out["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4, 5, 6, 7] and counts == {7}  # every open issue, once
    sent = [r.json() for r in github.requests("POST", "/graphql")]
    assert [r["variables"] for r in sent] == [
        {"query": "repo:octo/app is:open", "first": 3},
        {"query": "repo:octo/app is:open", "first": 3, "after": "Y3Vyc29yOj3"},
        {"query": "repo:octo/app is:open", "first": 3, "after": "Y3Vyc29yOj6"},
    ]
    assert {r["query"] for r in sent} == {github.documents["SearchIssues"]}
    assert github.requests()[0].headers["authorization"] == f"Bearer {GH_TOKEN}"


async def test_github_hostile_search_text_stays_one_variable(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    out = await call(executor, catalog, SEARCH, GH_CREDS, query=HOSTILE)
    assert out.output == {"issue_count": 0, "issues": [], "next_cursor": None}
    sent = github.requests()[-1].json()
    assert sent == {
        "query": github.documents["SearchIssues"],
        "variables": {"query": HOSTILE, "first": 20},
    }
    assert github.comments == []


async def test_github_search_leaves_out_what_the_token_may_not_see_and_says_so(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    github.issues += [_issue(n, repo="sso-org/vault") for n in (20, 21)]
    github.issues += [_issue(22, repo="octo/lib")]
    github.sso_protected = {"sso-org/vault"}
    out = await call(executor, catalog, SEARCH, GH_CREDS, query="is:open", limit=9)
    # GitHub counts the protected issues and sends them as null, with one FORBIDDEN error each
    # naming its place; the result keeps the others and the model is told what is missing.
    assert out.status == 200 and out.attempts == 1
    assert [i["number"] for i in out.output["issues"]] == [1, 2, 3, 4, 5, 6, 7]
    assert out.output["issue_count"] == 10 and out.output["next_cursor"] is not None
    assert out.notes == (
        "GitHub (GraphQL) answered in part: 2 errors came with the data (FORBIDDEN at "
        "search.nodes.7; FORBIDDEN at search.nodes.8). 2 items they name are left out of "
        "the result.",
    )
    assert "SAML" not in repr(out.notes)  # codes and paths, never the upstream's own text

    # The next page has none of them: a whole result, with nothing to say.
    rest = await call(
        executor,
        catalog,
        SEARCH,
        GH_CREDS,
        query="is:open",
        limit=9,
        cursor=out.output["next_cursor"],
    )
    assert [i["number"] for i in rest.output["issues"]] == [22] and rest.notes == ()
    # Everything withheld: the selected result is there (empty), still a result.
    only = await call(executor, catalog, SEARCH, GH_CREDS, query="repo:sso-org/vault")
    assert only.output["issues"] == [] and only.output["issue_count"] == 2
    assert only.notes and "2 errors" in only.notes[0]


async def test_github_partial_errors_inside_an_item(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    """An error on a field inside an item: a nullable field (repository) is null and the item
    kept; a non-null one (title) nulls the whole node, which is left out; a field the output
    schema does not allow null (state) leaves its item out too, not the whole call."""
    github.failing_field = {2: "repository", 4: "title"}
    out = await call(executor, catalog, SEARCH, GH_CREDS, query="is:open")
    issues = {i["number"]: i for i in out.output["issues"]}
    assert sorted(issues) == [1, 2, 3, 5, 6, 7]
    assert issues[2]["repository"] is None and issues[3]["repository"] is not None
    assert out.notes == (
        "GitHub (GraphQL) answered in part: 2 errors came with the data (INTERNAL at "
        "search.nodes.1.repository; INTERNAL at search.nodes.3.title). 1 item they name is "
        "left out of the result. 1 item they name is kept, with what they name null.",
    )

    github.reset()
    github.failing_field = {3: "state", 5: "repository"}
    out = await call(executor, catalog, SEARCH, GH_CREDS, query="label:bug")
    # `state` may not be null in the output: items kept with a field nulled are left out.
    assert [i["number"] for i in out.output["issues"]] == [1, 7]
    assert out.notes[0].endswith(
        "(INTERNAL at search.nodes.1.state; INTERNAL at search.nodes.2.repository). "
        "2 items they name are left out of the result."
    )


async def test_a_partial_answer_reaches_the_client_beside_the_data(
    tmp_path: Path, catalog: c.GatewaySpec, github: GitHubGraphQL, cipher: CredentialCipher
) -> None:
    """Through the gateway and the SDK client: the result's structured content is the data
    (valid for the output schema), its text the same data as JSON, then the note as a second
    text the model reads; the call's event says the answer was partial."""
    from mcp import Client

    from generator.runtime.server import GatewayRuntime

    github.reset()
    github.issues += [_issue(23, repo="sso-org/vault"), _issue(21, repo="octo/lib")]
    github.sso_protected = {"sso-org/vault"}
    store = Store(make_engine(str(tmp_path / "gateway.db")), catalog, cipher)
    store.migrate()
    executor = ConnectorExecutor(catalog, base_urls={"github_graphql": github.url + "/gh"})
    rt = GatewayRuntime(catalog, store, executor=executor, recorder_interval=0.05)
    try:
        tenant = store.create_tenant("acme").id
        store.connect(tenant, "github_graphql", GH_CREDS)
        key = store.issue_key(tenant).token
        async with Client(rt.build_server(api_key=key)) as client:
            result = await client.call_tool(SEARCH, {"query": "label:bug is:open"})
            assert not result.is_error, result.content
            data, note = (block.text for block in result.content)  # type: ignore[union-attr]
            assert json.loads(data) == result.structured_content
            assert [i["number"] for i in result.structured_content["issues"]] == [1, 3, 5, 7, 21]
            assert note.startswith("GitHub (GraphQL) answered in part: 1 error came with the data")
            with anyio.fail_after(5):
                while True:  # the recorder writes in the background
                    history = await client.call_tool("fastn_get_event_history", {"limit": 5})
                    calls = [e for e in history.structured_content["events"] if e["tool"] == SEARCH]
                    if calls:
                        break
                    await anyio.sleep(0.05)
        assert [(e["status"], e["details"].get("partial")) for e in calls] == [("ok", True)]
    finally:
        await rt.aclose()
        store.dispose()


@pytest.fixture(scope="module")
def trial_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A whole package built by `gen build` from the default manifests and GitHub's GraphQL
    connector, imported as `trial_gateway` (its own runtime, catalog and typed client)."""
    from generator import api

    root = tmp_path_factory.mktemp("trial_package")
    shutil.copytree(ROOT / "manifests", root / "manifests")
    shutil.copy(GITHUB_MANIFEST, root / "manifests" / "connectors" / GITHUB_MANIFEST.name)
    gateway = root / "manifests" / "gateway.yaml"
    text = gateway.read_text(encoding="utf-8")
    gateway.write_text(text.replace("import_name: fastn_gateway", "import_name: trial_gateway"))
    result = api.build(api.Options.for_project(root, cache=False))
    assert result.ok, result.diagnostics
    sys.path.insert(0, str(root / "generated"))
    try:
        yield importlib.import_module("trial_gateway")
    finally:
        sys.path.remove(str(root / "generated"))
        for name in [m for m in sys.modules if m.split(".")[0] == "trial_gateway"]:
            del sys.modules[name]


async def test_the_typed_client_returns_a_partial_answer_with_a_warning(
    tmp_path: Path, trial_package: Any, github: GitHubGraphQL
) -> None:
    """The generated client returns the data of a partial answer and warns
    PartialResultWarning with the note, pointing at the caller's line; a whole answer warns
    nothing, and a warnings filter can make the partial one an error."""
    client_module = importlib.import_module("trial_gateway.client")
    runtime = importlib.import_module("trial_gateway.runtime.server")
    store_module = importlib.import_module("trial_gateway.runtime.store")
    crypto = importlib.import_module("trial_gateway.runtime.crypto")
    catalog = importlib.import_module("trial_gateway.catalog").GATEWAY
    client_class, partial_warning = client_module.GatewayClient, client_module.PartialResultWarning
    assert "PartialResultWarning" in client_class.github_graphql_search_issues.__doc__
    assert "PartialResultWarning" not in client_class.github_graphql_get_repository.__doc__

    github.reset()
    github.issues += [_issue(23, repo="sso-org/vault"), _issue(21, repo="octo/lib")]
    github.sso_protected = {"sso-org/vault"}
    cipher = crypto.CredentialCipher([crypto.generate_key()])
    store = store_module.Store(
        store_module.make_engine(str(tmp_path / "gateway.db")), catalog, cipher
    )
    store.migrate()
    rt = runtime.GatewayRuntime(
        catalog,
        store,
        executor=importlib.import_module("trial_gateway.runtime.executor").ConnectorExecutor(
            catalog, base_urls={"github_graphql": github.url + "/gh"}
        ),
    )
    try:
        tenant = store.create_tenant("acme").id
        store.connect(tenant, "github_graphql", GH_CREDS)
        key = store.issue_key(tenant).token
        async with client_class.connect_to(rt.build_server(api_key=key)) as gw:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                out = await gw.github_graphql_search_issues(query="label:bug is:open")
                line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
                raw = await gw.call_tool(SEARCH, {"query": "label:bug is:open"})
                repo = await gw.github_graphql_get_repository(owner="octo", name="app")
            assert [i.number for i in out.issues] == [1, 3, 5, 7, 21]
            assert [i["number"] for i in raw["issues"]] == [1, 3, 5, 7, 21]
            assert repo.name_with_owner == "octo/app"
            assert [type(w.message) for w in seen] == [partial_warning, partial_warning]
            typed, untyped = (w.message for w in seen)
            assert typed.tool == SEARCH and len(typed.notes) == 1
            assert typed.notes[0].startswith("GitHub (GraphQL) answered in part: 1 error came")
            assert "FORBIDDEN at search.nodes." in typed.notes[0]
            assert {w.filename for w in seen} == {__file__}  # the caller's line, not ours
            assert seen[0].lineno == line
            with warnings.catch_warnings():
                warnings.simplefilter("error", partial_warning)
                with pytest.raises(partial_warning):
                    await gw.github_graphql_search_issues(query="label:bug is:open")
    finally:
        await rt.aclose()
        store.dispose()


async def test_github_partial_answer_with_a_rate_limit_error_is_a_rate_limit(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL, sleeps: Sleeps
) -> None:
    github.rate_limited, github.reset_in = 100, 3600
    exc = await fails(executor, catalog, SEARCH, GH_CREDS, query="is:open")
    assert exc.code == RATE_LIMITED and exc.attempts == 1 and sleeps.calls == []


async def test_github_repository_and_not_found_on_http_200(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    out = await call(executor, catalog, REPO, GH_CREDS, owner="octo", name="app")
    assert out.output == {
        "id": "R_kgDOapp",
        "name_with_owner": "octo/app",
        "description": None,
        "url": "https://github.com/octo/app",
        "stars": 42,
        "is_private": False,
        "default_branch": "main",
        "open_issues": 7,
    }
    exc = await fails(executor, catalog, REPO, GH_CREDS, owner="octo", name="nope")
    # HTTP 200 with `errors`: a failure; GitHub's `type` is the code the model is shown, and
    # one of the manifest's `not_found_errors`.
    assert exc.code == NOT_FOUND and exc.status == 200 and exc.retryable is False
    assert exc.message == "GitHub (GraphQL) found nothing for this request (NOT_FOUND)."
    assert exc.details["upstream_error"] == "NOT_FOUND"
    assert exc.attempts == 1


async def test_github_add_comment_sends_one_input_object(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    body = 'Looks like {"a": 1} — see `"} mutation {`\nthanks'
    out = await call(executor, catalog, COMMENT, GH_CREDS, subject_id="I_kwDO0003", body=body)
    assert out.output == {
        "comment_id": "IC_kwDO0001",
        "url": "https://github.com/octo/app/issues/1#issuecomment-1",
    }
    assert github.requests()[-1].json() == {
        "query": github.documents["AddComment"],
        "variables": {"input": {"subjectId": "I_kwDO0003", "body": body}},
    }
    assert github.comments == [{"subjectId": "I_kwDO0003", "body": body}]

    exc = await fails(executor, catalog, COMMENT, GH_CREDS, subject_id="I_missing", body="hi")
    assert exc.code == NOT_FOUND and exc.details["upstream_error"] == "NOT_FOUND"
    assert exc.attempts == 1  # a mutation that is not idempotent is never repeated


async def test_github_primary_rate_limit_on_http_200(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL, sleeps: Sleeps
) -> None:
    github.rate_limited, github.reset_in = 1, 3
    out = await call(executor, catalog, SEARCH, GH_CREDS, query="is:open", limit=1)
    assert out.attempts == 2 and len(sleeps.calls) == 1
    assert 0 < sleeps.calls[0] <= 3  # until x-ratelimit-reset, not a blind backoff

    github.rate_limited, github.reset_in = 100, 3600  # an hour away: reported, not waited for
    exc = await fails(executor, catalog, SEARCH, GH_CREDS, query="is:open")
    assert exc.code == RATE_LIMITED and exc.retryable is True and exc.status == 200
    assert exc.details["upstream_error"] == "RATE_LIMITED"
    assert exc.retry_after is not None and 3500 < exc.retry_after <= 3600
    assert exc.attempts == 1


async def test_github_secondary_rate_limit_is_a_403(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL, sleeps: Sleeps
) -> None:
    secondary = Fault(
        403,
        {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
            "before you try again.",
            "documentation_url": "https://docs.github.com/graphql/overview/rate-limits",
        },
        headers={"retry-after": "60"},
    )
    github.fail_next("POST", "/graphql", secondary)
    exc = await fails(executor, catalog, REPO, GH_CREDS, owner="octo", name="app")
    assert exc.code == RATE_LIMITED and exc.status == 403 and exc.retry_after == 60
    assert exc.retryable is True


async def test_github_bad_credentials(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, github: GitHubGraphQL
) -> None:
    exc = await fails(executor, catalog, SEARCH, {"token": "ghp_revoked"}, query="is:open")
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.status == 401
    # A REST-style body, not GraphQL's `errors` that `message_field` reads: its message is kept.
    assert exc.details["upstream_error"] == "Bad credentials"
    assert "ghp_revoked" not in repr(exc.details)


# ------------------------------------------------------------------------------ Linear tests


async def test_linear_pages_through_a_team_and_a_nested_filter(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, linear: LinearGraphQL
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"team_key": "ENG", "limit": 4} | (
            {"cursor": cursor} if cursor else {}
        )
        out = (await call(executor, catalog, LIST, LINEAR_CREDS, **args)).output
        seen += [i["identifier"] for i in out["issues"]]
        cursor = out["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"ENG-{n}" for n in range(10, 0, -1)]
    sent = [r.json()["variables"] for r in linear.requests("POST", "/graphql")]
    # Without `state`, its part of the filter is left out whole: no `{name: {eq: null}}`.
    assert sent == [
        {"filter": {"team": {"key": {"eq": "ENG"}}}, "first": 4},
        {"filter": {"team": {"key": {"eq": "ENG"}}}, "first": 4, "after": "4"},
        {"filter": {"team": {"key": {"eq": "ENG"}}}, "first": 4, "after": "8"},
    ]
    assert linear.requests()[0].headers["authorization"] == LINEAR_KEY  # no Bearer prefix

    out = (
        await call(executor, catalog, LIST, LINEAR_CREDS, team_key="ENG", state="In Progress")
    ).output
    assert [i["identifier"] for i in out["issues"]] == ["ENG-9", "ENG-6", "ENG-3"]
    assert linear.requests()[-1].json()["variables"] == {
        "filter": {"team": {"key": {"eq": "ENG"}}, "state": {"name": {"eq": "In Progress"}}},
        "first": 50,
    }


async def test_linear_hostile_team_key_stays_inside_the_filter(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, linear: LinearGraphQL
) -> None:
    hostile = '"}}}) { nodes { id } } } mutation { issueDelete(id: "x") { success } } #'
    out = await call(executor, catalog, LIST, LINEAR_CREDS, team_key='E"}} {', state=hostile)
    assert out.output["issues"] == [] and len(linear.issues) == 10
    sent = linear.requests()[-1].json()
    assert sent["query"] == linear.documents["ListIssues"]
    assert sent["variables"]["filter"] == {
        "team": {"key": {"eq": 'E"}} {'}},
        "state": {"name": {"eq": hostile}},
    }


async def test_linear_create_issue_with_an_input_object(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, linear: LinearGraphQL
) -> None:
    title = 'Crash on "save" {draft}'
    out = await call(executor, catalog, CREATE, LINEAR_CREDS, team_id=ENG, title=title, priority=2)
    assert out.output == {
        "success": True,
        "issue": {
            "id": str(uuid.UUID(int=11)),
            "identifier": "ENG-11",
            "url": "https://linear.app/acme/issue/ENG-11",
        },
    }
    # Only the arguments given are in the input object: no description or labelIds keys.
    assert linear.requests()[-1].json() == {
        "query": linear.documents["CreateIssue"],
        "variables": {"input": {"teamId": ENG, "title": title, "priority": 2}},
    }


async def test_linear_error_on_http_200(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, linear: LinearGraphQL
) -> None:
    other = "00000000-0000-4000-8000-000000000000"
    exc = await fails(executor, catalog, CREATE, LINEAR_CREDS, team_id=other, title="x")
    assert exc.code == UPSTREAM_ERROR and exc.status == 200 and exc.attempts == 1
    assert exc.message == "Linear reported an error (INVALID_INPUT)."
    assert len(linear.issues) == 10


async def test_linear_ratelimited_on_http_400_is_retried_then_reported(
    executor: ConnectorExecutor, catalog: c.GatewaySpec, linear: LinearGraphQL, sleeps: Sleeps
) -> None:
    linear.rate_limited = 1
    out = await call(executor, catalog, LIST, LINEAR_CREDS, team_key="ENG", limit=2)
    assert len(out.output["issues"]) == 2 and out.attempts == 2 and len(sleeps.calls) == 1
    # Until the reset its own header gives in epoch milliseconds, not a blind backoff.
    assert 1 < sleeps.calls[0] <= 2

    linear.rate_limited = 100
    exc = await fails(executor, catalog, LIST, LINEAR_CREDS, team_key="ENG")
    assert exc.code == RATE_LIMITED and exc.status == 400 and exc.retryable is True
    assert exc.attempts == catalog.connectors["linear"].retries + 1
    assert exc.details["upstream_error"] == "RATELIMITED"
    assert exc.retry_after is not None and 1 < exc.retry_after <= 2

    # A write that is not idempotent is not repeated, even when told to slow down.
    linear.rate_limited = 1
    exc = await fails(executor, catalog, CREATE, LINEAR_CREDS, team_id=ENG, title="t")
    assert exc.code == RATE_LIMITED and exc.attempts == 1 and len(linear.issues) == 10


async def test_linear_authentication_error_on_http_400(
    executor: ConnectorExecutor, catalog: c.GatewaySpec
) -> None:
    exc = await fails(executor, catalog, LIST, {"api_key": "lin_api_revoked"}, team_key="ENG")
    assert exc.code == UPSTREAM_AUTH_FAILED and exc.status == 400 and exc.retryable is False
    assert exc.details["upstream_error"] == "AUTHENTICATION_ERROR"


def test_the_catalog_carries_both_connectors_error_codes(catalog: c.GatewaySpec) -> None:
    gh, lin = catalog.connectors["github_graphql"], catalog.connectors["linear"]
    assert gh.errors.rate_limit_errors == ("RATE_LIMITED", "RATE_LIMIT")
    assert lin.errors.auth_errors == ("AUTHENTICATION_ERROR",)
    assert lin.errors.rate_limit_errors == ("RATELIMITED",)
    assert lin.errors.rate_limit_reset_header == "X-RateLimit-Requests-Reset"
    assert gh.errors.not_found_errors == ("NOT_FOUND",)

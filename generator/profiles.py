"""Client profiles for `gen lint`: what each MCP client or model API accepts, as data.

The numbers come from public issue trackers and docs of MCP clients (see the project's
client-limits notes). They drift as clients change, so they are defaults of a profile, not
constants of a rule: a rule reads the profile and reports against the numbers it finds there.
A gateway manifest selects profiles with `lint.profiles`; `gen lint --profile` overrides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# OpenAI and Anthropic tool names; MCP SEP-986 adds `.` and `/`.
NAME_64 = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Gemini function declarations: start with a letter or `_`; letters, digits, `_ . : -`; 64 max.
NAME_GEMINI = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")

AdditionalProperties = Literal["any", "boolean"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    title: str
    aliases: tuple[str, ...] = ()
    name_pattern: re.Pattern[str] = NAME_64
    name_rule: str = "^[A-Za-z0-9_-]{1,64}$"
    # How the client shows a tool to the model when it prefixes it with the server name, and
    # the limit on that combined name (None: the client does not prefix).
    prefix: str | None = None
    max_prefixed_name: int | None = None
    # Tools per session: above `warn_tools` a warning, above `max_tools` an error.
    warn_tools: int | None = None
    max_tools: int | None = None
    # Schema features (checked in input schemas: that is what reaches the model).
    rejects_refs: bool = False  # `$ref` / `$defs` / `definitions`
    rejects_type_arrays: bool = False  # `type: [string, "null"]`
    rejects_combinators: tuple[str, ...] = ()  # combinators refused at any depth
    additional_properties: AdditionalProperties = "any"  # "boolean": no schema-valued form
    strict: bool = False  # OpenAI strict mode: closed objects, every property required
    token_budget: int = 25_000  # tokens of one tools/list payload
    notes: str = ""


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="claude",
            title="Anthropic API / Claude",
            aliases=("anthropic",),
            warn_tools=40,
            token_budget=25_000,
            notes="Tool names ^[A-Za-z0-9_-]{1,64}$. Selection quality drops near 40 tools.",
        ),
        Profile(
            name="claude-code",
            title="Claude Code",
            prefix="mcp__{server}__{tool}",
            max_prefixed_name=64,
            warn_tools=40,
            token_budget=25_000,
            notes="Tools reach the Anthropic API as mcp__<server>__<tool>, which must fit 64.",
        ),
        Profile(
            name="openai",
            title="OpenAI function tools (non-strict)",
            warn_tools=40,
            max_tools=128,
            token_budget=25_000,
            notes="Tool names ^[A-Za-z0-9_-]{1,64}$; at most 128 tools per request.",
        ),
        Profile(
            name="openai-strict",
            title="OpenAI function tools with strict: true",
            warn_tools=40,
            max_tools=128,
            rejects_combinators=("oneOf", "allOf", "not"),
            strict=True,
            token_budget=25_000,
            notes="Every object closed (additionalProperties: false) and every property in "
            "required; optional ones nullable.",
        ),
        Profile(
            name="gemini",
            title="Gemini API and Gemini-based clients",
            name_pattern=NAME_GEMINI,
            name_rule="^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$",
            warn_tools=40,
            max_tools=128,
            rejects_refs=True,
            rejects_type_arrays=True,
            rejects_combinators=("oneOf", "allOf", "not"),
            additional_properties="boolean",
            token_budget=25_000,
            notes="No $ref/$defs, no type arrays (use nullable), no schema-valued "
            "additionalProperties.",
        ),
        Profile(
            name="cursor",
            title="Cursor",
            prefix="{server}_{tool}",
            max_prefixed_name=60,
            warn_tools=40,
            max_tools=80,
            token_budget=20_000,
            notes="About 60 characters for server prefix + tool name; sent only 40 tools at "
            "first, warns above 80.",
        ),
        Profile(
            name="vscode",
            title="VS Code / GitHub Copilot",
            aliases=("copilot",),
            warn_tools=40,
            max_tools=128,
            token_budget=25_000,
            notes="Rejects more than 128 tools per request.",
        ),
        Profile(
            name="windsurf",
            title="Windsurf",
            warn_tools=40,
            max_tools=50,
            token_budget=20_000,
            notes="About 50 tools.",
        ),
    )
}

_BY_ALIAS = {alias: p for p in PROFILES.values() for alias in (p.name, *p.aliases)}
DEFAULT_PROFILES = ("claude",)


def profile(name: str) -> Profile | None:
    return _BY_ALIAS.get(name.lower())


def known_names() -> tuple[str, ...]:
    return tuple(sorted(_BY_ALIAS))

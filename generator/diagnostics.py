"""Diagnostics as data: every stage reports problems as `Diagnostic` values, never by raising.

Codes are stable: a code keeps its meaning forever once released (retired codes are not reused).
`CODES` is the single registry; `docs/diagnostics.md` is generated from it and a test keeps the
two in sync.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from .frozen import frozen


@frozen(order=True)
class Span:
    """A position in a manifest: path relative to the project root, 1-based line and column."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{printable(self.file)}:{self.line}:{self.col}"


# Characters that must not appear raw where a file name is shown or written: C0 and C1 controls,
# DEL, the Unicode line and paragraph separators (each ends a line for some readers, so a name
# holding one could forge a line of a diagnostic or of generated code), the bidirectional
# controls (they make text display other than it reads), and lone surrogates (a byte the file
# system's name does not decode as UTF-8; no UTF-8 output can hold one).
_ABOVE_C0 = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
UNSAFE_IN_NAMES = re.compile(rf"[\x00-\x1f{_ABOVE_C0}]")
_UNSAFE_ABOVE_C0 = re.compile(f"[{_ABOVE_C0}]")  # what json.dumps leaves raw


def shortened(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, ending "...", when longer: a value shown in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listed(words: Sequence[str], last: str = "and") -> str:
    """`a`, `a and b`, `a, b and c` (or `or`): words in a message."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """The hint `did you mean 'X'?` for the option closest to a word that is not one of them, or
    None when none is close. An option that differs only in case comes first: difflib finds
    `get` no closer to `GET` than to `PUT` (its ratio counts equal characters, and case counts)."""
    choices = sorted(options)  # ties go to the first: the same hint whatever the order
    folded = word.casefold()
    close = [c for c in choices if c.casefold() == folded][:1]
    close = close or difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def printable(text: str) -> str:
    """`text` with every `UNSAFE_IN_NAMES` character as a Python-style escape (`\\n`,
    `\\x7f`, `\\u2028`): how a file name is shown in diagnostics and generated headers, so
    that it stays on one line whatever it holds. Other text is unchanged."""
    return UNSAFE_IN_NAMES.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    short = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(c)
    return short or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Code:
    code: str
    title: str
    stage: Literal["load", "validate", "compile", "emit", "write", "breaking", "lint"]


CODES: dict[str, Code] = {
    c.code: c
    for c in [
        # load: reading files and YAML
        Code(code="GEN001", title="manifest file or directory cannot be read", stage="load"),
        Code(code="GEN002", title="YAML syntax error", stage="load"),
        Code(code="GEN003", title="duplicate key in a YAML mapping", stage="load"),
        Code(code="GEN004", title="manifest is not a single YAML mapping", stage="load"),
        Code(code="GEN005", title="no manifests found", stage="load"),
        # validate: the published JSON Schema
        Code(code="GEN101", title="required property missing", stage="validate"),
        Code(code="GEN102", title="unknown property", stage="validate"),
        Code(code="GEN103", title="value has the wrong type", stage="validate"),
        Code(code="GEN104", title="value not allowed here", stage="validate"),
        Code(code="GEN105", title="value does not match the expected format", stage="validate"),
        Code(code="GEN106", title="value out of range (length, size or bounds)", stage="validate"),
        Code(code="GEN107", title="manifest violates the schema", stage="validate"),
        Code(code="GEN108", title="control character in manifest text", stage="validate"),
        # compile: meaning across files
        Code(code="GEN201", title="duplicate tool name", stage="compile"),
        Code(code="GEN202", title="invalid MCP tool name", stage="compile"),
        Code(code="GEN203", title="tool schema is not valid JSON Schema 2020-12", stage="compile"),
        Code(code="GEN204", title="schema root is not `type: object`", stage="compile"),
        Code(code="GEN205", title="unknown shared type", stage="compile"),
        Code(code="GEN206", title="unknown runtime handler", stage="compile"),
        Code(code="GEN207", title="template placeholder names no parameter", stage="compile"),
        Code(code="GEN208", title="Python names collide after sanitising", stage="compile"),
        Code(code="GEN209", title="session-bound parameter misdeclared", stage="compile"),
        Code(code="GEN210", title="gateway manifest missing or repeated", stage="compile"),
        Code(code="GEN211", title="unknown or duplicate connector", stage="compile"),
        Code(code="GEN212", title="unknown entity type or field", stage="compile"),
        Code(code="GEN213", title="invalid pagination or response mapping", stage="compile"),
        Code(code="GEN214", title="unknown quota plan", stage="compile"),
        Code(code="GEN215", title="duplicate or cyclic shared type", stage="compile"),
        Code(code="GEN216", title="duplicate resource", stage="compile"),
        Code(code="GEN217", title="invalid connector auth declaration", stage="compile"),
        Code(code="GEN218", title="invalid deprecation", stage="compile"),
        Code(code="GEN219", title="unknown JSON Schema keyword in a schema", stage="compile"),
        Code(code="GEN220", title="connector input never sent upstream", stage="compile"),
        Code(code="GEN221", title="invalid idempotency key declaration", stage="compile"),
        Code(
            code="GEN222",
            title="`const` or `enum` value the generated models cannot type",
            stage="compile",
        ),
        Code(code="GEN223", title="unknown template filter", stage="compile"),
        Code(code="GEN224", title="GraphQL binding inconsistent", stage="compile"),
        Code(
            code="GEN225",
            title="capability writes upstream but claims the read scope or read_only",
            stage="compile",
        ),
        Code(code="GEN226", title="connector URL is not an absolute http(s) URL", stage="compile"),
        Code(
            code="GEN227",
            title="schema too deep or too large once shared types are inlined",
            stage="compile",
        ),
        Code(code="GEN228", title="resource URI does not fit its handler", stage="compile"),
        Code(
            code="GEN229",
            title="request header the gateway or HTTP client sets, or repeated",
            stage="compile",
        ),
        Code(
            code="GEN230",
            title="query string or fragment written into `http.path`",
            stage="compile",
        ),
        Code(
            code="GEN231",
            title="unquoted `{name}` that YAML reads as a mapping `{name: null}`",
            stage="compile",
        ),
        Code(
            code="GEN232",
            title="memory tool schema disagrees with the memory settings or the store's limits",
            stage="compile",
        ),
        Code(
            code="GEN233",
            title="path placeholder a call may leave out, null, or fill with an object or list",
            stage="compile",
        ),
        # emit / write
        Code(code="GEN301", title="model generation failed", stage="emit"),
        Code(code="GEN302", title="formatting generated code failed", stage="emit"),
        Code(code="GEN303", title="two emitters produce the same file", stage="emit"),
        Code(code="GEN304", title="output directory cannot be read or written", stage="write"),
        Code(
            code="GEN305",
            title="generated file out of date (`gen build --check`)",
            stage="write",
        ),
        Code(
            code="GEN306",
            title="a build was killed while writing the output (`gen build` restores it)",
            stage="write",
        ),
        Code(
            code="GEN307",
            title="a file gen build did not write is where it would write one",
            stage="write",
        ),
        Code(
            code="GEN308",
            title="a symbolic link in the output directory leads a write or removal out of it",
            stage="write",
        ),
        # gen breaking: BRK0xx break agents already using the tools, BRK1xx are safe
        Code(code="BRK001", title="tool removed", stage="breaking"),
        Code(
            code="BRK002",
            title="required input added (or an optional input made required)",
            stage="breaking",
        ),
        Code(code="BRK003", title="input property removed", stage="breaking"),
        Code(code="BRK004", title="input type narrowed", stage="breaking"),
        Code(code="BRK005", title="input enum value removed", stage="breaking"),
        Code(code="BRK006", title="output property removed", stage="breaking"),
        Code(code="BRK007", title="output property made optional", stage="breaking"),
        Code(code="BRK008", title="output type changed", stage="breaking"),
        Code(
            code="BRK009",
            title="annotation flipped toward danger (read-only -> writes, "
            "non-destructive -> destructive, idempotent -> not)",
            stage="breaking",
        ),
        Code(code="BRK010", title="scope raised from read to write", stage="breaking"),
        Code(code="BRK011", title="connector auth changed", stage="breaking"),
        Code(code="BRK012", title="resource removed", stage="breaking"),
        Code(code="BRK013", title="input constraint tightened", stage="breaking"),
        Code(code="BRK014", title="output enum value added", stage="breaking"),
        Code(code="BRK015", title="input default changed or removed", stage="breaking"),
        Code(
            code="BRK016",
            title="output constraint relaxed or changed (bound, pattern, format, multipleOf, "
            "uniqueItems): values its readers refused may be returned",
            stage="breaking",
        ),
        Code(code="BRK101", title="tool added (safe)", stage="breaking"),
        Code(code="BRK102", title="optional input added (safe)", stage="breaking"),
        Code(
            code="BRK103",
            title="output property added, or undeclared ones allowed (additionalProperties "
            "opened) (safe)",
            stage="breaking",
        ),
        Code(
            code="BRK104",
            title="input accepts more: type widened, constraint relaxed or "
            "required input made optional (safe)",
            stage="breaking",
        ),
        Code(code="BRK105", title="input enum value added (safe)", stage="breaking"),
        Code(code="BRK106", title="resource added (safe)", stage="breaking"),
        Code(code="BRK107", title="tool or property deprecated (safe)", stage="breaking"),
        Code(code="BRK108", title="connector added (safe)", stage="breaking"),
        Code(code="BRK109", title="annotation or scope relaxed (safe)", stage="breaking"),
        Code(
            code="BRK110",
            title="output narrowed: property made required, type, enum or constraint narrowed "
            "(safe)",
            stage="breaking",
        ),
        Code(code="BRK201", title="invalid breaking-change exception", stage="breaking"),
        # gen lint: client compatibility, quality and token budgets
        Code(code="LNT001", title="tool name not accepted by a client profile", stage="lint"),
        Code(code="LNT002", title="server prefix + tool name too long for a client", stage="lint"),
        Code(code="LNT003", title="input schema uses $ref/$defs", stage="lint"),
        Code(
            code="LNT004", title="input schema uses a combinator the client rejects", stage="lint"
        ),
        Code(code="LNT005", title="input schema uses a `type` array", stage="lint"),
        Code(code="LNT006", title="`additionalProperties` form the client rejects", stage="lint"),
        Code(
            code="LNT007",
            title="strict mode: object not closed with `additionalProperties: false`",
            stage="lint",
        ),
        Code(code="LNT008", title="strict mode: property not in `required`", stage="lint"),
        Code(code="LNT009", title="tenant sees more tools than the client accepts", stage="lint"),
        Code(code="LNT010", title="tenant sees more tools than clients select well", stage="lint"),
        Code(code="LNT011", title="tool description empty or too short", stage="lint"),
        Code(
            code="LNT012", title="near-duplicate tool descriptions across connectors", stage="lint"
        ),
        Code(code="LNT013", title="tool annotations missing", stage="lint"),
        Code(code="LNT014", title="destructive tool without a confirmation hint", stage="lint"),
        Code(code="LNT015", title="deprecated tool or input property still served", stage="lint"),
        Code(code="LNT016", title="annotations contradict the scope or each other", stage="lint"),
        Code(code="LNT017", title="unknown client profile", stage="lint"),
        Code(code="LNT018", title="invalid or unused lint.disable entry", stage="lint"),
        Code(code="LNT020", title="tools/list payload over the token budget", stage="lint"),
        Code(
            code="LNT021",
            title="idempotency key on a capability already safe to repeat (idempotent, GET)",
            stage="lint",
        ),
        Code(
            code="LNT022",
            title="placeholder quoted by hand, or a bare text operand, in a query language",
            stage="lint",
        ),
        Code(code="LNT023", title="unused or contradictory lint.limits entry", stage="lint"),
        Code(
            code="LNT024",
            title="dotted path written as JSONPath, a JSON Pointer, a slash path or with brackets",
            stage="lint",
        ),
    ]
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    code: str
    severity: Severity
    span: Span
    message: str
    hint: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:  # a programming error, caught by tests
            raise ValueError(f"unregistered diagnostic code {self.code}")

    @property
    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "message": self.message,
            "hint": self.hint,
        }


def error(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code=code, severity=Severity.ERROR, span=span, message=message, hint=hint)


def warning(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code=code, severity=Severity.WARNING, span=span, message=message, hint=hint)


def normalise(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """Sorted by location, duplicates removed: the one order every renderer uses."""
    return tuple(sorted(set(diagnostics), key=lambda d: d.sort_key))


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


ErrorFormat = Literal["text", "json", "github"]


def render(
    diagnostics: Iterable[Diagnostic],
    fmt: ErrorFormat = "text",
    *,
    outside: str = "",
    workspace: str = "",
) -> str:
    """`outside`: the prefix of locations that are not files of the checkout (a baseline's,
    for `gen breaking`); a GitHub annotation can name no such file, so theirs is in the
    message. `workspace`: the project's path in the repository (`services/crm/`), which a
    GitHub annotation's file needs before the project-relative location."""
    items = normalise(diagnostics)
    if fmt == "json":
        text = json.dumps([d.as_dict() for d in items], indent=2, ensure_ascii=False)
        # json.dumps escapes C0 controls inside strings (its own newlines are indentation); the
        # rest of UNSAFE_IN_NAMES as JSON escapes too: the same strings to a JSON reader, and no
        # raw control character (nor a lone surrogate, which no console encoding takes).
        return _UNSAFE_ABOVE_C0.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"
    lines: list[str] = []
    for d in items:
        # Messages quote manifest text (keys, paths, values): escaped as file names are, so
        # that each diagnostic keeps its lines and no control sequence reaches the terminal.
        message, hint = printable(d.message), d.hint and printable(d.hint)
        if fmt == "github":
            # https://docs.github.com/actions/reference/workflow-commands-for-github-actions
            level = "error" if d.severity is Severity.ERROR else "warning"
            msg = message + (f" ({hint})" if hint else "")
            if outside and d.span.file.startswith(outside):
                lines.append(f"::{level} title={d.code}::{github_message(f'{d.span}: {msg}')}")
                continue
            lines.append(
                f"::{level} file={github_property(printable(workspace + d.span.file))},"
                f"line={d.span.line},"
                f"col={d.span.col},title={d.code}::{github_message(msg)}"
            )
        else:
            lines.append(f"{d.span}: {d.severity.value}[{d.code}] {message}")
            if hint:
                lines.append(f"  hint: {hint}")
    return "".join(line + "\n" for line in lines)


def workspace_prefix(root: str | os.PathLike[str], environ: Mapping[str, str]) -> str:
    """The path of the project `root` from where GitHub reads annotation files: the
    repository's root ($GITHUB_WORKSPACE, else the working directory), as `sub/dir/` (empty
    for the root itself; the absolute path for a project outside it)."""
    project = Path(root).resolve()
    base = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    if project == base:
        return ""
    return (project.relative_to(base) if project.is_relative_to(base) else project).as_posix() + "/"


def github_message(text: str) -> str:
    """A workflow command's message: `%`, CR and LF escaped (the runner unescapes them)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(text: str) -> str:
    """A workflow command's property value: as a message, plus `:` and `,`, which would end
    the value (a file named `a,line=9.yaml` must not set the line)."""
    return github_message(text).replace(":", "%3A").replace(",", "%2C")


def summary(diagnostics: Iterable[Diagnostic]) -> str:
    items = normalise(diagnostics)
    errors = sum(d.severity is Severity.ERROR for d in items)
    warnings = len(items) - errors
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"

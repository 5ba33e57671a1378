"""Reference pages generated from the code that defines them: the diagnostic codes and the
manifest schema. `python -m generator.docs` rewrites docs/; a test keeps them in sync."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .diagnostics import CODES
from .validate import manifest_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"
_STAGES = {
    "load": "Reading files and YAML",
    "validate": "The manifest JSON Schema",
    "compile": "Meaning across manifests",
    "emit": "Generating code",
    "write": "Writing the output",
    "breaking": "Breaking changes, `gen breaking` (docs/breaking.md)",
    "lint": "Client compatibility and budgets, `gen lint` (docs/lint.md)",
}


def diagnostics_markdown() -> str:
    lines = [
        "# Diagnostic codes",
        "",
        "Every problem `gen` finds is reported as `file:line:col: severity[CODE] message`, with an",
        "optional `hint:` line. Codes are stable: a released code never changes meaning. This page",
        "is generated from `generator/diagnostics.py` (`python -m generator.docs`).",
        "",
    ]
    for stage, title in _STAGES.items():
        lines += [f"## {title} ({stage})", "", "| code | meaning |", "|---|---|"]
        lines += [f"| `{c.code}` | {c.title} |" for c in CODES.values() if c.stage == stage]
        lines.append("")
    return "\n".join(lines)


def _type_text(s: dict[str, Any]) -> str:
    if "$ref" in s:
        return f"[{s['$ref'].split('/')[-1]}](#{s['$ref'].split('/')[-1].lower()})"
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    if "const" in s:
        return f"`{s['const']}`"
    for key in ("oneOf", "anyOf"):
        alternatives = [alt for alt in s.get(key) or () if isinstance(alt, dict)]
        if alternatives and not _only_required(alternatives):
            return " \\| ".join(_type_text(alt) for alt in alternatives)
    t = s.get("type", "any")
    if t == "array" and isinstance(s.get("items"), dict):
        return f"array of {_type_text(s['items'])}"
    if (
        t == "object"
        and isinstance(s.get("additionalProperties"), dict)
        and not s.get("properties")
    ):
        return f"map of name to {_type_text(s['additionalProperties'])}"
    return " \\| ".join(t) if isinstance(t, list) else str(t)


def _only_required(alternatives: list[dict[str, Any]]) -> bool:
    """`oneOf: [{required: [a]}, {required: [b]}]`: which keys must be present, not types."""
    return all(set(alt) == {"required"} for alt in alternatives)


def _constraints(s: dict[str, Any]) -> str:
    out = []
    target = s["items"] if isinstance(s.get("items"), dict) else s
    one_of = [alt for alt in target.get("oneOf") or () if isinstance(alt, dict)]
    if one_of and _only_required(one_of):
        keys = [", ".join(f"`{k}`" for k in alt["required"]) for alt in one_of]
        out.append(
            "exactly one of " + " or ".join(keys) + (" in each item" if target is not s else "")
        )
    if "pattern" in s:
        out.append(f"pattern `{s['pattern']}`")
    if s.get("minLength") == 1:
        out.append("not empty")
    elif "minLength" in s:
        out.append(f"at least {s['minLength']} characters")
    if "maxLength" in s:
        out.append(f"at most {s['maxLength']} characters")
    if "default" in s:
        out.append(f"default `{s['default']}`")
    return "; ".join(out)


def _rows(prefix: str, props: dict[str, Any], required: set[str]) -> list[str]:
    """One table row per property, nested inline objects as `parent.child` rows (arrays of
    them as `parent[].child`, maps of them as `parent.<name>.child`)."""
    rows: list[str] = []
    for prop, s in props.items():
        if not isinstance(s, dict):
            continue
        name = prefix + prop
        desc = s.get("description", "")
        extra = _constraints(s)
        if extra:
            desc = f"{desc} ({extra})" if desc else extra
        desc = desc.replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{name}` | {_type_text(s)} | {'yes' if prop in required else ''} | {desc} |"
        )
        if isinstance(s.get("properties"), dict):
            rows += _rows(name + ".", s["properties"], set(s.get("required", [])))
        items = s.get("items")
        if isinstance(items, dict) and isinstance(items.get("properties"), dict):
            rows += _rows(name + "[].", items["properties"], set(items.get("required", [])))
        values = s.get("additionalProperties")
        if isinstance(values, dict) and isinstance(values.get("properties"), dict):
            rows += _rows(name + ".<name>.", values["properties"], set(values.get("required", [])))
    return rows


def manifest_markdown() -> str:
    schema = manifest_schema()
    lines = [
        "# Manifest reference (version 1)",
        "",
        f"Generated from `generator/schema/manifest.v1.schema.json` (`$id` {schema['$id']}).",
        "Point your editor's YAML language server at that file for completion:",
        "`# yaml-language-server: $schema=<path>/manifest.v1.schema.json`.",
        "",
        schema["description"],
        "",
    ]
    for name, d in schema["$defs"].items():
        lines += [f"## {name}", ""]
        if d.get("description"):
            lines += [d["description"], ""]
        props = d.get("properties")
        items = d.get("items")
        if not props and isinstance(items, dict) and isinstance(items.get("properties"), dict):
            lines += [f"Type: {_type_text(d)}, each item:", ""]
            lines += ["| property | type | required | description |", "|---|---|---|---|"]
            lines += _rows("[].", items["properties"], set(items.get("required", [])))
            lines.append("")
            continue
        if not isinstance(props, dict) or not props:
            detail = _constraints(d)
            lines += [f"Type: {_type_text(d)}" + (f"; {detail}." if detail else "."), ""]
            continue
        lines += ["| property | type | required | description |", "|---|---|---|---|"]
        lines += _rows("", props, set(d.get("required", [])))
        lines.append("")
    return "\n".join(lines)


def breaking_markdown() -> str:
    from .breaking import rules_markdown

    return rules_markdown()


def lint_markdown() -> str:
    from .lint import rules_markdown

    return rules_markdown()


PAGES = {
    "diagnostics.md": diagnostics_markdown,
    "manifest.md": manifest_markdown,
    "breaking.md": breaking_markdown,
    "lint.md": lint_markdown,
}


def main() -> int:
    if sys.argv[1:]:
        print("usage: python -m generator.docs   (rewrites docs/*.md; takes no arguments)")
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    DOCS.mkdir(exist_ok=True)
    for name, fn in PAGES.items():
        (DOCS / name).write_text(fn(), encoding="utf-8")
    print(f"wrote {', '.join(PAGES)} to {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

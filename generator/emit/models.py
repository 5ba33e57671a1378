"""Typed Pydantic v2 models of every tool's input and output, one module per group.

datamodel-code-generator (`generator.datamodel`) reads the group's tools in MCP `tools/list`
form and names the models `<ToolName>Input` / `<ToolName>Output`; `names.ClassName` mints the
same names, and a mismatch is reported (GEN301) rather than emitting a client that imports a
missing class. The library's call may run in the models worker: `request` is what it is sent,
and `provided` hands the outcomes it sent back to the emitter.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping

from .. import ir
from ..compile import for_input_models, for_output_models
from ..datamodel import Outcome, Request, outcome
from ..render import python_header
from . import EmitError, FileSet, Output

_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)

_PROVIDED: contextvars.ContextVar[Mapping[str, Outcome] | None] = contextvars.ContextVar(
    "mcpforge_models_provided", default=None
)


def request(project: ir.Project, group: ir.Group, out: Output) -> Request:
    """What datamodel-code-generator is given for `group`.

    Output schemas go without their `default`s: a default there documents what the upstream
    means when it leaves a property out, but the gateway passes on what the upstream sent (the
    structured result has no such property), so the output model reads it as None rather than
    inventing the default (and a required property stays required). They go without
    `additionalProperties: false` too, so output models ignore properties they do not declare
    (`for_output_models`). Both go without the formats the gateway does not assert
    (`for_models`): those fields are plain `str`. Input objects that do not close themselves keep
    the properties they do not declare (`for_input_models`)."""
    payload: dict[str, object] = {
        "tools": [
            {
                "name": t.name,
                "inputSchema": for_input_models(t.input_schema.value),
                "outputSchema": for_output_models(t.output_schema.value),
            }
            for t in project.group_tools(group)
        ]
    }
    return payload, python_header(out.sources_text(group.sources)).rstrip("\n")


@contextlib.contextmanager
def provided(outcomes: Mapping[str, Outcome]) -> Iterator[None]:
    """Within this block, `group_models` takes the outcome of the groups named in `outcomes`
    (made elsewhere from their `request`) instead of calling datamodel-code-generator."""
    token = _PROVIDED.set(outcomes)
    try:
        yield
    finally:
        _PROVIDED.reset(token)


def group_models(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
    tools = project.group_tools(group)
    given = _PROVIDED.get()
    ok, text = (
        given[group.name]
        if given and group.name in given
        else outcome(request(project, group, out))
    )
    if not ok:
        raise EmitError(
            "GEN301",
            tools[0].span if tools else None,
            f"datamodel-code-generator failed on group {group.name!r}: {text}",
        )
    classes = set(_CLASS.findall(text))
    for t in tools:
        for model in (t.input_model, t.output_model):
            if model not in classes:
                raise EmitError(
                    "GEN301",
                    t.span,
                    f"expected model class {model} for tool {t.name!r} was not generated",
                )
    text = tidy(text, {m for t in tools for m in (t.input_model, t.output_model)})
    return {out.pkg(f"models/{group.name}.py"): text if text.endswith("\n") else text + "\n"}


_BUILTINS = frozenset(dir(builtins))


def tidy(text: str, tool_models: set[str]) -> str:
    """Two repairs of datamodel-code-generator's output, for the people who type against it:

    * a nested `class X(RootModel[T]): root: Annotated[T, ...]` (a constrained list item, a
      pattern-checked string) becomes the type alias `X = Annotated[T, ...]`, so `tags=["a"]`
      type-checks and values read back are plain `str`, not wrappers. Tool models stay
      classes (the client relies on them), and so does any RootModel whose type names
      something defined further down (an alias is evaluated at import);
    * a model with a field named `model_...` (renamed from `model_dump` to `model_dump_`)
      gets `protected_namespaces=()`, else Pydantic warns on import;
    * a default that Pydantic validates into the field's type (`opts: Annotated[Opts | None,
      Field(validate_default=True)] = {'a': 1}`, an object or array default) moves into
      `Field({'a': 1}, validate_default=True)`, which type checkers do not compare with the
      annotation: as a plain value it failed mypy and pyright (a dict is not an `Opts`).
    """
    tree = ast.parse(text)
    defined: set[str] = set(_BUILTINS)
    edits: list[tuple[int, int, str]] = []  # (first line, last line, replacement), 1-based
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ClassDef):
            alias = None if node.name in tool_models else _as_alias(text, node, defined)
            if alias is not None:
                edits.append((node.lineno, node.end_lineno or node.lineno, alias))
            else:
                edits.extend(_unprotect(text, node))
                edits.extend(_validated_defaults(text, node))
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name)}
    if not edits:
        return text
    lines = text.splitlines(keepends=True)
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first - 1 : last] = [replacement]
    result = "".join(lines)
    for module, name in (("pydantic", "RootModel"), ("typing", "Annotated")):
        if len(re.findall(rf"\b{name}\b", result)) == 1:  # only the import is left
            pattern = rf"(from {module} import [^\n]*?)\b{name}, |, {name}\b"
            result = re.sub(pattern, r"\1", result)
            result = re.sub(rf"(?m)^from {module} import {name}\n", "", result)
    return result


def _as_alias(text: str, node: ast.ClassDef, defined: set[str]) -> str | None:
    if not (
        len(node.bases) == 1
        and isinstance(node.bases[0], ast.Subscript)
        and isinstance(node.bases[0].value, ast.Name)
        and node.bases[0].value.id == "RootModel"
        and not node.decorator_list
        and not node.keywords
    ):
        return None
    body = list(node.body)
    doc = ast.get_docstring(node)
    if doc is not None:
        body = body[1:]
    if not (
        len(body) == 1
        and isinstance(body[0], ast.AnnAssign)
        and isinstance(body[0].target, ast.Name)
        and body[0].target.id == "root"
        and body[0].value is None
    ):
        return None
    annotation = body[0].annotation
    if not {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} <= defined:
        return None
    source = ast.get_source_segment(text, annotation)
    if source is None:
        return None
    comment = "".join(f"# {line}".rstrip() + "\n" for line in (doc or "").splitlines())
    return f"{comment}{node.name} = {source}\n"


def _unprotect(text: str, node: ast.ClassDef) -> list[tuple[int, int, str]]:
    fields = [
        s.target.id
        for s in node.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    ]
    if not any(name.startswith("model_") for name in fields):
        return []
    for stmt in node.body:
        if (
            isinstance(stmt, ast.Assign)
            and [getattr(t, "id", None) for t in stmt.targets] == ["model_config"]
            and isinstance(stmt.value, ast.Call)
            and not any(k.arg == "protected_namespaces" for k in stmt.value.keywords)
        ):
            call = ast.get_source_segment(text, stmt.value)
            if call is None or not call.endswith(")"):
                return []
            inner = call[:-1].rstrip().rstrip(",")
            sep = "" if inner.endswith("(") else ", "
            indent = " " * stmt.col_offset
            line = f"{indent}model_config = {inner}{sep}protected_namespaces=())\n"
            return [(stmt.lineno, stmt.end_lineno or stmt.lineno, line)]
    return []


def _validated_defaults(text: str, node: ast.ClassDef) -> list[tuple[int, int, str]]:
    edits = []
    for stmt in node.body:
        if not (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
            and not (isinstance(stmt.value, ast.Call) and _is_name(stmt.value.func, "Field"))
            and isinstance(stmt.annotation, ast.Subscript)
            and _is_name(stmt.annotation.value, "Annotated")
            and isinstance(stmt.annotation.slice, ast.Tuple)
        ):
            continue
        elts = stmt.annotation.slice.elts
        fields = [e for e in elts[1:] if isinstance(e, ast.Call) and _is_name(e.func, "Field")]
        if not any(
            kw.arg == "validate_default"
            and isinstance(kw.value, ast.Constant)
            and kw.value.value is True
            for f in fields
            for kw in f.keywords
        ):
            continue
        # validate_default moves to the default's Field; Annotated[T] alone is just T.
        meta: list[str | None] = []
        for e in elts[1:]:
            if isinstance(e, ast.Call) and e in fields:
                kws = [kw for kw in e.keywords if kw.arg != "validate_default"]
                if e.args or kws:
                    meta.append(ast.unparse(ast.Call(func=e.func, args=e.args, keywords=kws)))
            else:
                meta.append(ast.get_source_segment(text, e))
        type_src = ast.get_source_segment(text, elts[0])
        value_src = ast.get_source_segment(text, stmt.value)
        if type_src is None or value_src is None or None in meta:
            continue
        if meta:
            type_src = f"Annotated[{type_src}, {', '.join(map(str, meta))}]"
        indent = " " * stmt.col_offset
        line = f"{indent}{stmt.target.id}: {type_src} = Field({value_src}, validate_default=True)\n"
        edits.append((stmt.lineno, stmt.end_lineno or stmt.lineno, line))
    return edits


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name

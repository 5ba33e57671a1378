"""Typed Pydantic v2 models of every tool's input and output, one module per group.

datamodel-code-generator (`generator.datamodel`) reads the group's tools in MCP `tools/list`
form and names the models `<ToolName>Input` / `<ToolName>Output`; `names.ClassName` mints the
same names, and a mismatch is reported (GEN301) rather than emitting a client that imports a
missing class. The library's call may run in the models worker: `request` is what it is sent,
and `provided` hands the outcomes it sent back to the emitter.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping

from .. import ir
from ..datamodel import Outcome, Request, outcome
from ..render import python_header
from . import EmitError, FileSet, Output

_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)

_PROVIDED: contextvars.ContextVar[Mapping[str, Outcome] | None] = contextvars.ContextVar(
    "mcpforge_models_provided", default=None
)


def request(project: ir.Project, group: ir.Group, out: Output) -> Request:
    """What datamodel-code-generator is given for `group`."""
    payload: dict[str, object] = {
        "tools": [
            {
                "name": t.name,
                "inputSchema": t.input_schema.value,
                "outputSchema": t.output_schema.value,
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
    return {out.pkg(f"models/{group.name}.py"): text if text.endswith("\n") else text + "\n"}

"""Typed Pydantic v2 models of every tool's input and output, one module per group.

datamodel-code-generator reads the group's tools in MCP `tools/list` form and names the models
`<ToolName>Input` / `<ToolName>Output`; `names.ClassName` mints the same names, and a mismatch is
reported (GEN301) rather than emitting a client that imports a missing class.
"""

from __future__ import annotations

import re
from typing import Any

from .. import ir
from ..render import python_header
from . import EmitError, FileSet, Output

_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)


def _generate(payload: dict[str, Any], header: str) -> str:
    from datamodel_code_generator import (  # imported lazily: it costs ~0.3 s
        DataModelType,
        Formatter,
        InputFileType,
        LiteralType,
        PythonVersion,
        generate,
    )

    source = generate(
        payload,
        input_file_type=InputFileType.MCPTools,
        output_model_type=DataModelType.PydanticV2BaseModel,
        target_python_version=PythonVersion.PY_311,
        use_annotated=True,
        field_constraints=True,
        snake_case_field=True,
        allow_population_by_field_name=True,
        parent_scoped_naming=True,
        enum_field_as_literal=LiteralType.All,
        disable_timestamp=True,
        formatters=[Formatter.BUILTIN],
        custom_file_header=header,
    )
    assert isinstance(source, str)
    return source


def warm_up() -> None:
    """Pay datamodel-code-generator's first-call cost (lazy imports, its own models and
    templates, ~0.5 s) on a one-property tool: before forking workers, which then start warm."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    _generate(
        {"tools": [{"name": "warm_up", "inputSchema": schema, "outputSchema": schema}]}, "# warm-up"
    )


def group_models(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
    tools = project.group_tools(group)
    payload: dict[str, Any] = {
        "tools": [
            {
                "name": t.name,
                "inputSchema": t.input_schema.value,
                "outputSchema": t.output_schema.value,
            }
            for t in tools
        ]
    }
    header = python_header(out.sources_text(group.sources))
    try:
        source = _generate(payload, header.rstrip("\n"))
    except Exception as exc:  # the library's own errors carry no location; ours does
        raise EmitError(
            "GEN301",
            tools[0].span if tools else None,
            f"datamodel-code-generator failed on group {group.name!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        ) from exc
    classes = set(_CLASS.findall(source))
    for t in tools:
        for model in (t.input_model, t.output_model):
            if model not in classes:
                raise EmitError(
                    "GEN301",
                    t.span,
                    f"expected model class {model} for tool {t.name!r} was not generated",
                )
    text = source if source.endswith("\n") else source + "\n"
    return {out.pkg(f"models/{group.name}.py"): text}

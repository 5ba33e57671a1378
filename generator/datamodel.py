"""datamodel-code-generator as the generator calls it: one place for its options.

Light to import (nothing of the generator, and datamodel-code-generator itself only when first
called): the models worker loads this module first thing, and the build benchmark's baseline
uses it too.

Its output is left unformatted here. The build formats every Python file with the pinned ruff
(`generator/format.py`), and datamodel-code-generator's own formatter would only slow the build
down: it also reads the line length and first-party packages from the pyproject.toml nearest to
the current directory, which made the generated models depend on where `gen` was run from.
"""

from __future__ import annotations

import warnings

# A models request: the group's tools in MCP `tools/list` form, and the file header.
Request = tuple[dict[str, object], str]
# Its outcome: (True, source) or (False, what went wrong), plain data that crosses processes.
Outcome = tuple[bool, str]

_UNTAKEN_CONSTRAINT = r"Pydantic does not take \w+ on \w+; .* is generated without this constraint"


def generate(
    payload: dict[str, object], header: str | None = None, *, formatted: bool = False
) -> str:
    """The Pydantic v2 models module of the tools in `payload`. `formatted` applies
    datamodel-code-generator's builtin formatter (the benchmark's baseline does: that is
    datamodel-code-generator alone, producing finished code)."""
    from datamodel_code_generator import (  # imported lazily: ~0.4 s with its first call
        DataModelType,
        Formatter,
        InputFileType,
        LiteralType,
        PythonVersion,
    )
    from datamodel_code_generator import generate as dmcg_generate

    with warnings.catch_warnings():
        # A constraint Pydantic cannot put on the type a format maps to (a `pattern` on a
        # date-time, a UUID): the typed models go without it, and the gateway still checks it
        # (it validates every call's input and output against the full JSON Schema). The
        # README says so once, instead of a warning on each build that regenerates models.
        warnings.filterwarnings("ignore", _UNTAKEN_CONSTRAINT, UserWarning)
        source = dmcg_generate(
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
            formatters=[Formatter.BUILTIN] if formatted else [],
            custom_file_header=header,
        )
    assert isinstance(source, str)
    return source


def outcome(request: Request) -> Outcome:
    """`generate` on a request, its failure kept as text (the library's errors carry no
    location: the caller locates them)."""
    payload, header = request
    try:
        return True, generate(payload, header)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        return False, f"{type(exc).__name__}: {first}"


def warm_up() -> None:
    """Pay datamodel-code-generator's first-call cost (its lazy imports, models and templates:
    about 0.4 s) on a one-property tool, so that the calls that matter start warm."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    generate({"tools": [{"name": "warm_up", "inputSchema": schema, "outputSchema": schema}]})

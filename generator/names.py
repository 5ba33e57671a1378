"""Names are types, minted here and nowhere else.

`PyIdent` and `ClassName` are `str` subclasses whose constructors sanitise: whatever a manifest
says, the result is a valid, non-reserved Python name. Sanitising can make two different inputs
equal; the compiler reports that as GEN208 instead of inventing a `_2` suffix.
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
from collections.abc import Iterator
from typing import cast

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOL_NAME = 64

# Names a generated identifier must not take: keywords, builtins, pydantic BaseModel attributes,
# and names the generated modules and runtime use themselves.
_RESERVED = (
    set(keyword.kwlist)
    | set(keyword.softkwlist)
    | set(dir(builtins))
    | {
        "model_config",
        "model_fields",
        "model_computed_fields",
        "model_extra",
        "model_fields_set",
        "model_construct",
        "model_copy",
        "model_dump",
        "model_dump_json",
        "model_json_schema",
        "model_parametrized_name",
        "model_post_init",
        "model_rebuild",
        "model_validate",
        "model_validate_json",
        "model_validate_strings",
        "dict",
        "json",
        "copy",
        "parse_obj",
        "parse_raw",
        "parse_file",
        "from_orm",
        "construct",
        "schema",
        "schema_json",
        "validate",
        "update_forward_refs",
        "fields",
        # generated client / runtime
        "self",
        "cls",
        "call_tool",
        "list_tools",
        "read_resource",
        "close",
        "session",
        "annotations",
        "typing",
        "pydantic",
        "runtime",
        "models",
        "catalog",
        "client",
    }
)
_NON_IDENT = re.compile(r"[^0-9A-Za-z_]+")
_WORDS = re.compile(r"[0-9A-Za-z]+")


class PyIdent(str):
    """A snake_case Python identifier that is safe as a module, function or argument name."""

    __slots__ = ()

    def __new__(cls, raw: str) -> PyIdent:
        name = _NON_IDENT.sub("_", raw).strip("_") or "x"
        if name[0].isdigit():
            name = "n_" + name
        if name in _RESERVED:
            name += "_"
        return super().__new__(cls, name)


class ClassName(str):
    """A PascalCase class name built from the words of a raw name (`slack_send_message` ->
    `SlackSendMessage`), matching datamodel-code-generator's naming of MCP tool models."""

    __slots__ = ()

    def __new__(cls, raw: str) -> ClassName:
        name = _pascal(raw) or "X"
        if name[0].isdigit():
            name = "N" + name
        if name in _RESERVED:
            name += "_"
        return super().__new__(cls, name)


def _pascal(raw: str) -> str:
    """The words of `raw`, each capitalised, joined (`slack_send_message` -> `SlackSendMessage`)."""
    return "".join(w[:1].upper() + w[1:] for w in _WORDS.findall(raw))


def _word_forms(word: str) -> set[str]:
    """`word` as a nested class name may spell it: as it is, singular (an array's item:
    `Orders` -> `Order`, `Categories` -> `Category`, `Data` -> `Datum`), or with `Item`."""
    forms = {word, word + "Item"}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    if word.endswith("a"):
        forms.add(word[:-1] + "um")
    return {f for f in forms if f}


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _named_subschemas(schema: object) -> Iterator[tuple[str, object]]:
    """Each property, pattern and `$defs` name of `schema` at any depth, with its subschema
    (values of `const`, `enum` and `default` are not schemas)."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(cast("list[object]", node))
        elif isinstance(node, dict):
            mapping = cast("dict[str, object]", node)
            for key in _SCHEMA_MAPS:
                sub = mapping.get(key)
                if isinstance(sub, dict):
                    yield from cast("dict[str, object]", sub).items()
            todo.extend(v for k, v in mapping.items() if k not in ("const", "enum", "default"))


def nested_name_parts(schema: object) -> frozenset[str]:
    """The name parts datamodel-code-generator may join after a tool model's name to name the
    classes it makes for that model's nested objects (parent-scoped: `<Tool>Input<Prop>...`):
    each property, pattern and `$defs` name of `schema` at any depth, in the forms
    `_word_forms` lists. An over-approximation, for `could_name_nested`."""
    parts: set[str] = set()
    for name, _sub in _named_subschemas(schema):
        if word := _pascal(str(name)):
            parts |= _word_forms(word)
    return frozenset(parts)


def unscoped_names(schema: object) -> frozenset[str]:
    """The names datamodel-code-generator may give the class of an `allOf` at any depth of
    `schema`: unlike other nested objects, it is named after its property alone, not scoped
    by its tool's model (`q_output` -> `QOutput`, its array's item `QOutputItem`), so it can
    take the name of a tool's model. An over-approximation (`_word_forms`)."""
    names: set[str] = set()
    for name, sub in _named_subschemas(schema):
        items = cast("dict[str, object]", sub).get("items") if isinstance(sub, dict) else None
        merged = any(isinstance(v, dict) and "allOf" in v for v in (sub, items))
        if merged and (word := _pascal(str(name))):
            names |= _word_forms(word)
    return frozenset(names)


def could_name_nested(model: str, name: str, parts: frozenset[str]) -> bool:
    """Whether `name` may be the class datamodel-code-generator makes for an object nested in
    the model `model`: `model` followed by one or more of `parts` (`nested_name_parts` of that
    model's schema). The models generator gives the first class it meets a name and the later
    one a digit (`FooInput1`): when that later one is a tool's model, the client and every
    caller would use the wrong class, so the compiler refuses the pair (GEN208)."""
    if not name.startswith(model) or name == model:
        return False
    rest = name[len(model) :]
    # can rest[i:] be split into parts? (longest part bounds the work)
    ends = {len(rest)}
    for i in range(len(rest) - 1, -1, -1):
        if any(rest.startswith(p, i) and i + len(p) in ends for p in parts):
            ends.add(i)
    return 0 in ends


# Public attributes of runtime/client_base.ClientBase, which the generated client inherits (a
# test keeps this list exact): a tool's client method named like one would replace it.
CLIENT_BASE_NAMES = frozenset(
    {
        "PACKAGE",
        "REPEATABLE_TOOLS",
        "TOOL_METHODS",
        "call_tool",
        "close",
        "connect",
        "connect_to",
        "connected",
        "http",
        "list_resources",
        "list_tools",
        "read_resource",
        "stdio",
    }
)


def reader_method(resource_name: str) -> str:
    """The generated client's method that reads the resource `resource_name`. A tool's method
    is its `PyIdent`; the compiler checks that no two of these names, nor one of them and a
    `CLIENT_BASE_NAMES` entry, are the same."""
    return f"read_{PyIdent(resource_name)}"


# Top-level modules installed with the generated package: those of its dependencies
# (emit/package.py's SERVER_DEPENDENCIES and POSTGRES_EXTRA; a test checks that every one is
# here) and of theirs, as the distributions' metadata listed them when this was written. A
# package of the same import name would overwrite one of them, or be hidden by it.
DEPENDENCY_MODULES = frozenset(
    {
        "_cffi_backend",
        "annotated_types",
        "anyio",
        "attr",
        "attrs",
        "cffi",
        "click",
        "cryptography",
        "dns",
        "email_validator",
        "h11",
        "httpcore2",
        "httpx2",
        "idna",
        "jsonschema",
        "jsonschema_specifications",
        "jwt",
        "mcp",
        "mcp_types",
        "multipart",
        "opentelemetry",
        "psycopg",
        "psycopg_binary",
        "pycparser",
        "pydantic",
        "pydantic_core",
        "python_multipart",
        "referencing",
        "rpds",
        "sqlalchemy",
        "sse_starlette",
        "starlette",
        "truststore",
        "typing_extensions",
        "typing_inspection",
        "uvicorn",
    }
)
GENERATOR_MODULE = "generator"  # mcpforge's own import name


# Packages of the standard library that `sys.stdlib_module_names` leaves out: CPython's own
# tests, which a venv imports ahead of site-packages (the console script would run them).
STDLIB_UNLISTED = frozenset({"test"})


def import_name_problem(name: str) -> str | None:
    """Why `name` cannot be the generated package's import name, or None. The name is used as
    written (it is what users import): one the sanitiser would change is refused, not renamed."""
    if not name.isidentifier():
        return "is not a Python identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if name in sys.stdlib_module_names or name in STDLIB_UNLISTED:
        return "is a module of Python's standard library, which the package would hide"
    if name in DEPENDENCY_MODULES:
        return "is a module the generated package depends on; one would hide the other"
    if name == GENERATOR_MODULE:
        return "is mcpforge's own import name"
    if PyIdent(name) != name:
        return f"is a name the generated code reserves (it would have to become {PyIdent(name)!r})"
    return None


def is_valid_tool_name(name: str) -> bool:
    return bool(TOOL_NAME_RE.match(name))

"""The typed client: `<package>/client.py` and one methods module per tool group.

Method signatures are read from the generated models, not re-derived from the JSON Schemas:
the group's models module (datamodel-code-generator's output) is parsed with `ast`, and each
keyword argument takes its input-model field's annotation and default verbatim, so the client
can never disagree with the models it validates with. Names those annotations use are imported
the way the models module imports or defines them.

Per group (cached and parallel like the models): `client_methods/<group>.py` holds a
`<Group>Tools(ClientBase)` class with one async method per tool. Per project: `client.py`
combines them into `GatewayClient` and adds one reader per declared resource (the compiler
checks that no method name collides with another or with `ClientBase`'s own: GEN208).
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import ir
from ..names import ClassName, PyIdent, reader_method
from ..render import docstring, literal, python_header, render
from ..runtime.handler_names import URI_VARIABLE
from . import EmitError, FileSet, GroupEmitter, Output

CLIENT_CLASS = "GatewayClient"
METHODS_PACKAGE = "client_methods"
_BUILTINS = frozenset(dir(builtins))
_TYPING = {"Any": "from typing import Any"}  # used by the client itself
_DOC_WIDTH = 88
# The default of a top-level argument whose schema takes null (runtime/client_base.py)
NOT_GIVEN = "NOT_GIVEN"
NOT_GIVEN_TYPE = "NotGiven"
NOT_GIVEN_DOC = "None sends null; left out (NOT_GIVEN), it is not sent."


# ---------------------------------------------------------------------------- models source


@dataclass(frozen=True, slots=True)
class ModelField:
    name: str  # Python attribute name
    wire: str  # JSON name (the alias, or the attribute name)
    annotation: ast.expr  # without Annotated[...] metadata
    default: ast.expr | None  # None: required, or filled by a default factory
    factory: bool


@dataclass(frozen=True, slots=True)
class ModelsModule:
    fields: dict[str, tuple[ModelField, ...]]  # class name -> fields, in declaration order
    kinds: dict[str, str]  # class name -> "fields", "extra" (extra="allow") or "root" (RootModel)
    imports: dict[str, str]  # name -> the import statement that binds it
    defined: frozenset[str]  # module-level names (classes, aliases)


def _field_call(node: ast.expr) -> ast.Call | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Field":
        return node
    return None


def _parse_field(stmt: ast.AnnAssign) -> ModelField | None:
    if not isinstance(stmt.target, ast.Name):
        return None
    annotation = stmt.annotation
    if (
        isinstance(annotation, ast.Subscript)
        and isinstance(annotation.value, ast.Name)
        and annotation.value.id == "ClassVar"
    ):
        return None
    calls: list[ast.Call] = []
    if (
        isinstance(annotation, ast.Subscript)
        and isinstance(annotation.value, ast.Name)
        and annotation.value.id == "Annotated"
        and isinstance(annotation.slice, ast.Tuple)
    ):
        elts = annotation.slice.elts
        annotation = elts[0]
        calls += [c for c in map(_field_call, elts[1:]) if c is not None]
    default = stmt.value
    if default is not None and (call := _field_call(default)) is not None:
        calls.append(call)
        default = call.args[0] if call.args else None
        if isinstance(default, ast.Constant) and default.value is Ellipsis:
            default = None
    wire = stmt.target.id
    factory = False
    for call in calls:
        for kw in call.keywords:
            if kw.arg == "alias" and isinstance(kw.value, ast.Constant):
                wire = str(kw.value.value)
            elif kw.arg == "default":
                default = kw.value
            elif kw.arg == "default_factory":
                factory = True
    return ModelField(
        name=stmt.target.id,
        wire=wire,
        annotation=annotation,
        default=None if factory else default,
        factory=factory,
    )


def _kind(node: ast.ClassDef) -> str:
    for base in node.bases:
        if (
            isinstance(base, ast.Subscript)
            and isinstance(base.value, ast.Name)
            and base.value.id == "RootModel"
        ):
            return "root"
    for stmt in node.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "model_config" for t in stmt.targets)
            and isinstance(stmt.value, ast.Call)
        ):
            for kw in stmt.value.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Constant):
                    return "extra" if kw.value.value == "allow" else "fields"
    return "fields"


def parse_models(source: str) -> ModelsModule:
    tree = ast.parse(source)
    fields: dict[str, tuple[ModelField, ...]] = {}
    kinds: dict[str, str] = {}
    imports: dict[str, str] = {}
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            for alias in node.names:
                bound = alias.asname or alias.name
                as_ = f" as {alias.asname}" if alias.asname else ""
                imports[bound] = f"from {'.' * node.level}{node.module} import {alias.name}{as_}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                imports[bound] = (
                    f"import {alias.name} as {alias.asname}"
                    if alias.asname
                    else f"import {alias.name}"
                )
        elif isinstance(node, ast.ClassDef):
            defined.add(node.name)
            fields[node.name] = tuple(
                f
                for f in (_parse_field(s) for s in node.body if isinstance(s, ast.AnnAssign))
                if f is not None
            )
            kinds[node.name] = _kind(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
    return ModelsModule(fields=fields, kinds=kinds, imports=imports, defined=frozenset(defined))


def _names(nodes: Iterable[ast.expr | None]) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        if node is not None:
            out.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    return out


def _admits_none(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _admits_none(node.left) or _admits_none(node.right)
    return False


# ---------------------------------------------------------------------------- views


def _doc(text: str, indent: str) -> str:
    """`render.docstring`, without the indentation it puts on blank lines."""
    return re.sub(r"(?m)^[ \t]+$", "", docstring(text, indent=indent))


def _wrap(text: str, width: int) -> list[str]:
    """Long lines wrapped at `width`; indented lines (code, lists) kept as they are."""
    lines: list[str] = []
    for line in text.strip().splitlines() or [""]:
        if len(line) <= width or line[:1].isspace():
            lines.append(line.rstrip())
        else:
            lines.extend(
                textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]
            )
    return lines


def _annotation_words(a: ir.Annotations) -> str:
    words = [
        w
        for w, on in (
            ("read-only", a.read_only),
            ("destructive", a.destructive),
            ("idempotent", a.idempotent),
            ("open world", a.open_world),
        )
        if on
    ]
    return ", ".join(words) or "none"


def _method_doc(
    t: ir.Tool,
    fields: tuple[ModelField, ...],
    params: dict[str, str],
    rest: str | None,
    unshown: frozenset[str] = frozenset(),
    not_given: frozenset[str] = frozenset(),
) -> str:
    """`unshown`: fields whose default the signature does not show (None or `NOT_GIVEN`: the
    docstring gives it); `not_given`: those that default to `NOT_GIVEN` (None sends null)."""
    width = _DOC_WIDTH - 8
    # a deprecated tool's description ends with its deprecation note (compile.deprecation_note:
    # the replacement, the sunset and the reason), which the model reads too
    lines = _wrap(t.description, width)
    props = t.input_schema.value.get("properties", {})
    described = []
    for f in fields:
        prop = props.get(f.wire)
        text = prop.get("description") if isinstance(prop, dict) else None
        text = text if isinstance(text, str) and text.strip() else ""
        if f.name in not_given:
            text = f"{text.rstrip()} {NOT_GIVEN_DOC}".lstrip()
        if f.name in unshown and isinstance(prop, dict) and "default" in prop:
            given = json.dumps(prop["default"], ensure_ascii=False, default=str)
            text = f"{text.rstrip()} Default: {given}.".lstrip()
        described.append((params[f.name], text))
    if rest is not None:
        what = "the arguments" if rest == "**arguments" else "further arguments"
        described.append((rest, f"{what}, sent by their JSON names."))
    if described:
        lines += ["", "Args:"]
        for name, text in described:
            wrapped = _wrap(f"{name}: {text}".rstrip(": ") if text else name, width - 4)
            lines += ["    " + wrapped[0], *("        " + w for w in wrapped[1:])]
    lines += [
        "",
        *_wrap(
            f"Returns {t.output_model}. Scope: {t.scope}. "
            f"Annotations: {_annotation_words(t.annotations)}."
            + (
                " An answer that came in part warns PartialResultWarning with what it left out."
                if t.http is not None and t.http.graphql_partial
                else ""
            ),
            width,
        ),
    ]
    return _doc("\n".join(lines), "        ")


@dataclass(frozen=True, slots=True)
class MethodView:
    name: str
    tool: str  # literal
    signature: str  # after `self`: ", *, name: annotation = default, ..."
    arguments: str  # source of the mapping passed to `_call_tool`
    input_model: str
    output_model: str
    doc: str
    nullable: str  # literal of the paths `_call_tool` keeps an explicit null at, "" for none
    not_given: bool  # a parameter defaults to NOT_GIVEN


def _param_name(name: str, body: frozenset[str]) -> str:
    """`name` as a parameter of a generated method whose body uses the names `body`."""
    return name + "_" if name in body else name


def _dict_value(node: ast.expr) -> ast.expr | None:
    """X of `dict[str, X]`."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "dict"
        and isinstance(node.slice, ast.Tuple)
        and len(node.slice.elts) == 2
    ):
        return node.slice.elts[1]
    return None


def _method(t: ir.Tool, module: ModelsModule) -> tuple[MethodView, set[str]]:
    kind = module.kinds[t.input_model]
    fields = module.fields[t.input_model]
    nullable = nullable_paths(t.input_schema.value)
    takes_null = {p[0] for p in nullable if len(p) == 1}
    params: dict[str, str] = {}
    rendered: list[str] = []
    used: set[str] = set()
    unshown: set[str] = set()
    not_given: set[str] = set()
    rest: str | None = None
    if kind == "root":  # an object of free-form properties: **arguments
        value = _dict_value(fields[0].annotation) if fields else None
        rest = "**arguments"
        if value is not None:
            rendered.append(f"**arguments: {ast.unparse(value)}")
            used |= _names([value])
        else:
            rendered.append("**arguments: Any")
            used.add("Any")
        fields = ()
        arguments = "arguments"
    else:
        # Names the method's body uses besides its parameters (`cls` is kept out too, as
        # PyIdent does): a parameter named like one would shadow it, so it takes a `_`. Inputs
        # whose names differ only by underscores are GEN208 in the compiler, so the suffix
        # never meets another field's name.
        body = frozenset({"self", "cls", "extra", str(t.input_model), str(t.output_model)})
        for f in fields:
            pname = _param_name(f.name, body)
            params[f.name] = pname
            annotation = ast.unparse(f.annotation)
            if f.factory or f.default is not None:
                # An optional argument defaults to None, which leaves it out: the gateway
                # applies its own default, which the docstring gives. Written in the signature,
                # that default could not be told from a value the caller wrote, which must be
                # sent (a gateway built later may default to something else); a list, dict or
                # model default would also be one object shared by every call.
                if not _admits_none(f.annotation):
                    annotation += " | None"
                if f.wire in takes_null:
                    # None is a value here, sent as null: left out is another default
                    rendered.append(f"{pname}: {annotation} | {NOT_GIVEN_TYPE} = {NOT_GIVEN}")
                    not_given.add(f.name)
                else:
                    rendered.append(f"{pname}: {annotation} = None")
                used |= _names([f.annotation])
                unshown.add(f.name)
                continue
            rendered.append(f"{pname}: {annotation}")
            used |= _names([f.annotation])
        items = [f"{literal(f.name)}: {params[f.name]}" for f in fields]
        if kind == "extra":
            rest = "**extra"
            rendered.append("**extra: Any")
            used.add("Any")
            items.append("**extra")
        arguments = "{" + ", ".join(items) + "}"
    named = [r for r in rendered if not r.startswith("**")]
    signature = "".join([", *" if named else "", *(f", {r}" for r in rendered)])
    view = MethodView(
        name=str(t.py_name),
        tool=literal(t.name),
        signature=signature,
        arguments=arguments,
        input_model=str(t.input_model),
        output_model=str(t.output_model),
        doc=_method_doc(t, fields, params, rest, frozenset(unshown), frozenset(not_given)),
        nullable=_nullable_literal(nullable),
        not_given=bool(not_given),
    )
    return view, used


def _defs_entry(ref: Any, root: dict[str, Any]) -> Any:
    """The `$defs` entry a local `$ref` names (`#/$defs/Name`, the one form the compiler
    leaves), else None."""
    if isinstance(ref, str) and ref.startswith("#/$defs/") and "/" not in ref[8:]:
        defs = root.get("$defs")
        return defs.get(ref[8:]) if isinstance(defs, dict) else None
    return None


def _takes_null(schema: Any, root: dict[str, Any]) -> bool:
    """Whether JSON null may be valid under `schema`, as its `type`, `enum`, `const`, local
    references and combinators say (the compiler refuses recursive references)."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        return False
    declared = schema.get("type")
    if isinstance(declared, str) and declared != "null":
        return False
    if isinstance(declared, list) and "null" not in declared:
        return False
    if "const" in schema and schema["const"] is not None:
        return False
    if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
        return False
    if "$ref" in schema and not _takes_null(_defs_entry(schema["$ref"], root), root):
        return False
    if any(not _takes_null(s, root) for s in schema.get("allOf") or ()):
        return False
    return all(
        any(_takes_null(s, root) for s in schema[key])
        for key in ("anyOf", "oneOf")
        if isinstance(schema.get(key), list)
    )


def nullable_paths(schema: dict[str, Any]) -> list[tuple[str, ...]]:
    """The paths (property names, `*` for an item or a free-form value) of the properties in a
    tool's input whose schema takes null: the typed client sends an explicit None there as
    null, and leaves it out elsewhere (the models type every optional field `X | None`, null
    allowed or not). A top-level one (a path of one name) defaults to `NOT_GIVEN` in the
    method's signature, so that leaving it out still sends nothing."""
    found: set[tuple[str, ...]] = set()

    def walk(s: Any, path: tuple[str, ...]) -> None:
        if not isinstance(s, dict):
            return
        walk(_defs_entry(s.get("$ref"), schema), path)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key) or ():
                walk(sub, path)
        props = s.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                if _takes_null(sub, schema):
                    found.add((*path, str(name)))
                walk(sub, (*path, str(name)))
        for key in ("items", "additionalProperties"):
            walk(s.get(key), (*path, "*"))
        for key in ("prefixItems",):
            for sub in s.get(key) or ():
                walk(sub, (*path, "*"))
        pattern_props = s.get("patternProperties")
        if isinstance(pattern_props, dict):
            for sub in pattern_props.values():
                walk(sub, (*path, "*"))

    walk(schema, ())
    return sorted(found)


def _nullable_literal(paths: list[tuple[str, ...]]) -> str:
    if not paths:
        return ""
    return "frozenset({" + ", ".join(literal(p) for p in paths) + "})"


def mixin_name(group: ir.Group) -> str:
    return f"{ClassName(group.name)}Tools"


def _group_doc(project: ir.Project, group: ir.Group) -> str:
    connector = next((c for c in project.connectors if PyIdent(c.name) == group.name), None)
    if connector is not None:
        what = f"Tools of the {connector.title} connector ({connector.name})"
        text = f"{what}: visible once the workspace has connected it."
    elif group.family == "personalization":
        text = "Memory tools: they read and update what is known about the current user."
    else:
        text = "Built-in tools of the gateway, available to every workspace."
    return _doc("\n".join(_wrap(text, _DOC_WIDTH - 4)), "    ")


# The models emitter's latest output per group, kept until the client emitter (which runs next,
# in the same process) takes it: datamodel-code-generator is the costliest step of a cold build
# and must not run twice per group. Entries match only the very same project object.
_MODELS_SEEN: dict[str, tuple[ir.Project, Output, FileSet]] = {}


def shares_models(emitter: GroupEmitter) -> GroupEmitter:
    """Wrap the models emitter in the registry so `group_client` can reuse its output."""

    @functools.wraps(emitter)
    def wrapper(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
        files = emitter(project, group, out)
        _MODELS_SEEN[str(group.name)] = (project, out, files)
        return files

    return wrapper


def _models_files(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
    seen = _MODELS_SEEN.pop(str(group.name), None)
    if seen is not None and seen[0] is project and seen[1] == out:
        return seen[2]
    from .models import group_models

    return group_models(project, group, out)


def group_client(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
    tools = project.group_tools(group)
    models_path = out.pkg(f"models/{group.name}.py")
    source = _models_files(project, group, out)[models_path]
    module = parse_models(source)
    for t in tools:
        for cls in (t.input_model, t.output_model):
            # datamodel-code-generator names a nested object after its parents and renames
            # a second class of the same name with a digit: a tool's own model renamed means
            # another tool's nested object took its name, and the client would use the wrong one.
            # The compiler refuses the names that can (names.could_name_nested, and
            # names.unscoped_names for an allOf's class); this stays for what its prediction of
            # the library's naming misses.
            if f"{cls}1" in module.defined:
                raise EmitError(
                    "GEN208",
                    t.span,
                    f"the model class {cls} of tool {t.name!r} collides with the class made "
                    "for a nested object of another tool of this group (named <Tool><Input|"
                    "Output><Property>): rename the tool or that property",
                )
    methods: list[MethodView] = []
    used: set[str] = set()
    for t in tools:
        view, names = _method(t, module)
        methods.append(view)
        used |= names
    not_given = [m for m in methods if m.not_given]
    taken = sorted({NOT_GIVEN, NOT_GIVEN_TYPE} & (module.defined | module.imports.keys()))
    if not_given and taken:
        # the methods module imports them from the runtime beside the models' names
        tool = next(t for t in tools if str(t.py_name) == not_given[0].name)
        raise EmitError(
            "GEN208",
            tool.span,
            f"the models of group {group.name!r} hold a class {' and '.join(taken)}, a name "
            "the client methods import from the runtime for the default of the arguments that "
            f"take null of tool {tool.name!r} (an allOf property named not_given makes that "
            "class): rename that property",
        )
    model_names = {str(t.input_model) for t in tools} | {str(t.output_model) for t in tools}
    from_models = sorted(model_names | {n for n in used if n in module.defined})
    imports = sorted(
        {
            module.imports.get(n, _TYPING.get(n, ""))
            for n in used
            if n not in module.defined and (n in module.imports or n in _TYPING)
        }
    )
    unknown = sorted(
        n
        for n in used
        if n not in module.defined
        and n not in module.imports
        and n not in _TYPING
        and n not in _BUILTINS
    )
    if unknown:
        raise EmitError(
            "GEN301",
            tools[0].span if tools else None,
            f"client methods of group {group.name!r} use names the models module "
            f"does not bind: {', '.join(unknown)}",
        )
    text = render(
        "client_methods.py.j2",
        header=python_header(out.sources_text(group.sources)),
        group=str(group.name),
        class_name=mixin_name(group),
        class_doc=_group_doc(project, group),
        imports=imports,
        from_models=from_models,
        from_runtime=sorted(
            ["ClientBase", *([NOT_GIVEN, NOT_GIVEN_TYPE] if not_given else [])],
            key=lambda n: (not n.isupper(), n),
        ),
        methods=methods,
    )
    return {out.pkg(f"{METHODS_PACKAGE}/{group.name}.py"): text}


# ---------------------------------------------------------------------------- client.py


@dataclass(frozen=True, slots=True)
class ReaderView:
    name: str
    params: tuple[str, ...]
    uri: str  # Python expression
    json: bool
    doc: str


def _is_json(mime: str) -> bool:
    base = mime.split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


# Names a reader's signature and body use besides its parameters (client.py.j2): a placeholder
# named like one would shadow it (`{expand_uri}` made the call raise TypeError).
_READER_BODY = frozenset({"self", "expand_uri", "Any", "ResourceContent"})


def _reader(r: ir.Resource) -> ReaderView:
    template = r.uri_template or r.uri or ""
    placeholders = list(dict.fromkeys(URI_VARIABLE.findall(template)))
    params = {p: _param_name(str(PyIdent(p)), _READER_BODY) for p in placeholders}
    seen: dict[str, str] = {}
    for raw, py in params.items():
        if py in seen:
            raise EmitError(
                "GEN208",
                r.span,
                f"placeholders {{{seen[py]}}} and {{{raw}}} of "
                f"resource {r.name!r} both become parameter {py!r}",
            )
        seen[py] = raw
    if r.uri_template and placeholders:
        mapping = "{" + ", ".join(f"{literal(raw)}: {py}" for raw, py in params.items()) + "}"
        uri = f"expand_uri({literal(template)}, {mapping})"
    else:
        uri = literal(template)
    is_json = _is_json(r.mime_type)
    text = r.description.strip()
    if r.title:
        text = f"{r.title}: {text}"
    text += f"\n\nReads {template}" + (" and returns its JSON object." if is_json else ".")
    return ReaderView(
        name=reader_method(r.name),
        params=tuple(f"{p}: str" for p in seen),
        uri=uri,
        json=is_json,
        doc=_doc("\n".join(_wrap(text, _DOC_WIDTH - 8)), "        "),
    )


def client_module(project: ir.Project, out: Output) -> FileSet:
    g = project.gateway
    # Method names are checked by the compiler (GEN208): no tool, reader and ClientBase
    # attribute share one.
    readers = [_reader(r) for r in g.resources]
    mixins = [(str(gr.name), mixin_name(gr)) for gr in project.groups]
    tool_methods = {t.name: str(t.py_name) for t in project.tools}
    repeatable = sorted(
        t.name for t in project.tools if t.annotations.read_only or t.annotations.idempotent
    )
    title = g.title or g.server_name
    module_intro = (
        f"Typed async client of {title}. See {CLIENT_CLASS}; a call made outside "
        "`async with` opens and closes its own connection."
    )
    intro = (
        f"Typed async client of {title}: one method per tool (keyword arguments typed from "
        "the tool's input model, returning its validated output model) and one reader per "
        "resource. An optional argument left out, or None, is not sent (the gateway applies "
        "its default), except one whose schema takes null: it defaults to NOT_GIVEN (not "
        "sent), and None sends null. Every failure raises GatewayClientError with the "
        "gateway's error envelope: code, message, details, retryable, retry_after. A tool "
        "the caller cannot see raises code unknown_tool, exactly like an unknown one; a tool "
        "of the tenant's own connection that awaits re-authorisation or was disconnected "
        "raises not_connected. Failures on the client's side have codes of their own: "
        "connection_failed (the gateway could not be reached; the message names the URL "
        "tried, or quotes a stdio server that ended at once), timeout, invalid_response (a "
        "result that does not fit the output model), protocol_error and tool_error."
    )
    header = python_header(out.all_sources_text())
    files = {
        out.pkg("client.py"): render(
            "client.py.j2",
            header=header,
            module_doc=docstring(
                "\n".join(_wrap(module_intro, _DOC_WIDTH))
                + "\n\nExample::\n\n"
                + "\n".join("    " + line for line in client_example(project).splitlines())
            ),
            class_doc=_doc(
                "\n".join(_wrap(intro, _DOC_WIDTH - 4))
                + "\n\nExample::\n\n"
                + "\n".join("    " + line for line in session_example(project).splitlines()),
                "    ",
            ),
            class_name=CLIENT_CLASS,
            mixins=mixins,
            package=literal(str(g.import_name)),
            tool_methods=[(literal(k), literal(v)) for k, v in tool_methods.items()],
            repeatable_tools=[literal(name) for name in repeatable],
            readers=readers,
            any_json=any(v.json for v in readers),
            any_template=any("expand_uri(" in v.uri for v in readers),
        ),
        out.pkg(f"{METHODS_PACKAGE}/__init__.py"): render(
            "client_methods_init.py.j2",
            header=header,
            groups=[str(gr.name) for gr in project.groups],
        ),
    }
    return files


def example_tool(project: ir.Project) -> ir.Tool | None:
    """The tool the examples call: a read-only tool without required arguments, preferring
    built-in ones (they work without any connected app)."""

    def required(t: ir.Tool) -> bool:
        return bool(t.input_schema.value.get("required"))

    # Built-in tools rank first: only when there are none are the others' schemas read.
    candidates = [t for t in project.tools if t.family == "native"] or project.tools
    ranked = sorted(
        candidates,
        key=lambda t: (
            required(t),
            not t.annotations.read_only,
            len(t.input_schema.value.get("properties", {})),
            t.name,
        ),
    )
    return ranked[0] if ranked else None


def session_example(
    project: ir.Project, url: str = "http://127.0.0.1:8000/mcp", key: str = "gwk_..."
) -> str:
    """Several calls over one connection."""
    t = example_tool(project)
    method = str(t.py_name) if t and not t.input_schema.value.get("required") else "list_tools"
    return (
        f'async with {CLIENT_CLASS}.http("{url}", api_key="{key}") as gw:\n'
        f"    tools = await gw.list_tools()\n"
        f"    result = await gw.{method}()\n"
    )


def client_example(
    project: ir.Project, url: str = "http://127.0.0.1:8000/mcp", key: str = "gwk_..."
) -> str:
    """Three lines that work as written, in a script or a REPL (a call without `async with`
    opens and closes its own connection)."""
    g = project.gateway
    t = example_tool(project)
    method = str(t.py_name) if t and not t.input_schema.value.get("required") else "list_tools"
    return (
        f"import asyncio\n"
        f"from {g.import_name}.client import {CLIENT_CLASS}\n"
        f'print(asyncio.run({CLIENT_CLASS}.http("{url}", api_key="{key}").{method}()))\n'
    )

"""The catalog modules: every tool, connector and setting as `runtime.catalog` data."""

from __future__ import annotations

from .. import ir
from ..names import PyIdent
from ..render import literal, python_header, render
from ..runtime.catalog import GatewaySpec
from . import FileSet, Output

_CATALOG_NAMES = (
    "Annotations",
    "AuthField",
    "ConnectorAuth",
    "ConnectorSpec",
    "Deprecation",
    "EntityMapping",
    "ErrorShape",
    "HttpBinding",
    "IdempotencyKey",
    "Pagination",
    "ToolSpec",
)


def _call(callee: str, /, **kwargs: str) -> str:
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{callee}({args})"


def _pairs(pairs: ir.Pairs | tuple[tuple[str, int], ...]) -> str:
    return literal(dict(pairs))


def _annotations(a: ir.Annotations) -> str:
    return _call(
        "Annotations",
        read_only=literal(a.read_only),
        destructive=literal(a.destructive),
        idempotent=literal(a.idempotent),
        open_world=literal(a.open_world),
    )


def _http(h: ir.HttpBinding) -> str:
    pagination = "None"
    if h.pagination is not None:
        p = h.pagination
        optional = {"more": p.more, "size_param": p.size_param, "total": p.total}
        pagination = _call(
            "Pagination",
            style=literal(p.style),
            param=literal(p.param),
            next=literal(p.next),
            **{key: literal(value) for key, value in optional.items() if value is not None},
        )
    # Written only when declared, so bindings without one read as they always have.
    extra: dict[str, str] = {}
    if h.idempotency_key is not None:
        k = h.idempotency_key
        places = {"header": k.header, "body": k.body, "query": k.query}
        extra["idempotency_key"] = _call(
            "IdempotencyKey",
            **{place: literal(name) for place, name in places.items() if name is not None},
        )
    if h.graphql is not None:
        extra["graphql"] = literal(h.graphql)
    if h.graphql_partial:
        extra["graphql_partial"] = literal(True)
    return _call(
        "HttpBinding",
        method=literal(h.method),
        path=literal(h.path),
        query=literal(h.query.value),
        headers=_pairs(h.headers),
        body=literal(h.body.value),
        body_encoding=literal(h.body_encoding),
        select=literal(h.select),
        fields=_pairs(h.fields),
        pagination=pagination,
        **extra,
    )


def tool_expr(t: ir.Tool) -> str:
    kwargs = {
        "name": literal(t.name),
        "title": literal(t.title),
        "description": literal(t.description),
        "family": literal(t.family),
        "group": literal(str(t.group)),
        "connector": literal(t.connector),
        "scope": literal(t.scope),
        "annotations": _annotations(t.annotations),
        "input_schema": literal(t.input_schema.value),
        "output_schema": literal(t.output_schema.value),
        "handler": literal(t.handler),
        "bind": _pairs(t.bind),
        "http": _http(t.http) if t.http else "None",
        "entities": literal(())
        if not t.entities
        else "("
        + "".join(
            _call(
                "EntityMapping",
                type=literal(e.type),
                items=literal(e.items),
                args=literal(e.args.value),
                fields=_pairs(e.fields),
            )
            + ", "
            for e in t.entities
        )
        + ")",
        "input_model": literal(str(t.input_model)),
        "output_model": literal(str(t.output_model)),
        "tags": literal(t.tags),
        "deprecated": "None"
        if t.deprecated is None
        else _call(
            "Deprecation",
            reason=literal(t.deprecated.reason),
            replacement=literal(t.deprecated.replacement),
            sunset=literal(t.deprecated.sunset),
        ),
    }
    return _call("ToolSpec", **kwargs)


def connector_expr(c: ir.Connector) -> str:
    a = c.auth
    auth = _call(
        "ConnectorAuth",
        type=literal(a.type),
        fields="("
        + "".join(
            _call(
                "AuthField",
                name=literal(f.name),
                title=literal(f.title),
                description=literal(f.description),
                secret=literal(f.secret),
                required=literal(f.required),
            )
            + ", "
            for f in a.fields
        )
        + ")",
        **{
            k: literal(getattr(a, k))
            for k in (
                "token_field",
                "header",
                "key_field",
                "username_field",
                "password_field",
                "token_url",
                "refresh_token_field",
                "client_id_field",
                "client_secret_field",
            )
        },
    )
    errors = _call(
        "ErrorShape",
        ok_field=literal(c.errors.ok_field),
        message_field=literal(c.errors.message_field),
        auth_errors=literal(c.errors.auth_errors),
        **{  # only those set: older catalogs' text stays as it was
            field: literal(value)
            for field, value in (
                ("rate_limit_errors", c.errors.rate_limit_errors),
                ("not_found_errors", c.errors.not_found_errors),
                ("rate_limit_reset_header", c.errors.rate_limit_reset_header),
            )
            if value
        },
    )
    return _call(
        "ConnectorSpec",
        name=literal(c.name),
        title=literal(c.title),
        description=literal(c.description),
        base_url=literal(c.base_url),
        auth=auth,
        errors=errors,
        timeout_seconds=literal(c.timeout_seconds),
        retries=literal(c.retries),
        tools=literal(c.tools),
    )


def group_catalog(project: ir.Project, group: ir.Group, out: Output) -> FileSet:
    connector = next((c for c in project.connectors if PyIdent(c.name) == group.name), None)
    tools = [tool_expr(t) for t in project.group_tools(group)]
    connector_text = connector_expr(connector) if connector else None
    body = "".join(tools) + (connector_text or "")
    # ToolSpec and ConnectorSpec annotate the module's two names, so they are always imported
    imports = sorted({"ToolSpec", "ConnectorSpec", *(n for n in _CATALOG_NAMES if f"{n}(" in body)})
    text = render(
        "catalog_group.py.j2",
        header=python_header(out.sources_text(group.sources)),
        group=str(group.name),
        imports=imports,
        tools=tools,
        connector=connector_text,
    )
    return {out.pkg(f"catalog/{group.name}.py"): text}


def _mapping(items: dict[str, str]) -> str:
    """A dict display of ready expressions (the trailing comma keeps one entry per line)."""
    return "{" + "".join(f"{literal(k)}: {v}, " for k, v in items.items()) + "}"


def gateway_settings(project: ir.Project) -> dict[str, str]:
    """`GatewaySpec` keyword arguments (all but tools and connectors) as Python expressions."""
    g = project.gateway
    plans = {
        p.name: _call(
            "QuotaPlan",
            name=literal(p.name),
            period=literal(p.period),
            calls=literal(p.calls),
            per_connector=_pairs(p.per_connector),
        )
        for p in g.plans
    }
    entity_types = {
        e.name: _call(
            "EntityType",
            name=literal(e.name),
            description=literal(e.description),
            fields=_pairs(e.fields),
        )
        for e in g.entity_types
    }
    resources = [
        _call(
            "ResourceSpec",
            name=literal(r.name),
            description=literal(r.description),
            handler=literal(r.handler),
            uri=literal(r.uri),
            uri_template=literal(r.uri_template),
            title=literal(r.title),
            mime_type=literal(r.mime_type),
        )
        for r in g.resources
    ]
    return {
        "package_name": literal(g.package_name),
        "import_name": literal(str(g.import_name)),
        "version": literal(g.version),
        "server_name": literal(g.server_name),
        "title": literal(g.title),
        "instructions": literal(g.instructions),
        "max_result_bytes": literal(g.max_result_bytes),
        "scopes": _pairs(g.scopes),
        "key_ttl_days": literal(g.key_ttl_days),
        "default_plan": literal(g.default_plan),
        "plans": _mapping(plans),
        "entity_types": _mapping(entity_types),
        "resources": "(" + "".join(f"{r}, " for r in resources) + ")",
        "memory": _call(
            "MemorySettings",
            default_top_k=literal(project.memory.default_top_k),
            max_observation_chars=literal(project.memory.max_observation_chars),
        ),
    }


def catalog_index(project: ir.Project, out: Output) -> FileSet:
    g = project.gateway
    # What gateway_settings() calls: a gateway without entity types or resources imports
    # neither class (an unused import is an error to pyright's strict mode).
    optional = {"EntityType": g.entity_types, "QuotaPlan": g.plans, "ResourceSpec": g.resources}
    text = render(
        "catalog_index.py.j2",
        header=python_header(out.all_sources_text()),
        imports=sorted(
            {"GatewaySpec", "MemorySettings", "ToolSpec", *(n for n, v in optional.items() if v)}
        ),
        groups=[str(gr.name) for gr in project.groups],
        connector_groups=[str(PyIdent(c.name)) for c in project.connectors],
        settings=gateway_settings(project),
    )
    return {out.pkg("catalog/__init__.py"): text}


def runtime_gateway(project: ir.Project) -> GatewaySpec:
    """The catalog as runtime objects, evaluated from the very expressions the emitted catalog
    modules hold, so in-process users (tests, benchmarks) run exactly what a build writes."""
    from ..runtime import catalog as rc

    namespace = dict(vars(rc))
    tools = {t.name: eval(tool_expr(t), namespace) for t in project.tools}  # noqa: S307
    connectors = {c.name: eval(connector_expr(c), namespace) for c in project.connectors}  # noqa: S307
    settings = {k: eval(v, namespace) for k, v in gateway_settings(project).items()}  # noqa: S307
    return rc.GatewaySpec(**settings, connectors=connectors, tools=dict(sorted(tools.items())))

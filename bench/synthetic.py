"""A synthetic, deterministic catalog of connectors for the build benchmark.

`write_project(root, tools=N)` writes a scratch mcpforge project: the default gateway, native,
personalization and shared-types manifests (copied from manifests/, the gateway's tenants and
quota plans pointed at synthetic connectors), a file of extra shared types, and
ceil(N / per_connector) connector manifests holding N capabilities in all.

The schemas imitate real SaaS APIs: records with ids, enums, nullable fields, `format`s,
timestamps, nested objects, arrays of objects, free-form metadata, shared `$ref: "#/types/..."`
types (money, address, person, timestamps), cursor / page / link pagination, entity mappings
to the gateway's common data model, and descriptions of realistic length. Everything comes from
one seeded `random.Random`, so a (tools, per_connector, seed) triple always yields the same bytes.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MANIFESTS = REPO / "manifests"
FIXED_MANIFESTS = ("native.yaml", "personalization.yaml", "types.yaml")

_APPS = (
    "acme",
    "bolt",
    "cobalt",
    "delta",
    "ember",
    "falcon",
    "garnet",
    "harbor",
    "iris",
    "juniper",
    "kepler",
    "lumen",
    "maple",
    "nimbus",
    "onyx",
    "pioneer",
    "quartz",
    "raven",
    "summit",
    "tundra",
    "umbra",
    "vertex",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
)
_KINDS = (
    "crm",
    "helpdesk",
    "commerce",
    "billing",
    "chat",
    "project",
    "marketing",
    "storage",
    "hr",
    "analytics",
)
# resource -> (common-data-model entity or None, kind-ish flavour words)
_RESOURCES: dict[str, str | None] = {
    "contact": "contact",
    "company": None,
    "deal": None,
    "lead": "contact",
    "ticket": "ticket",
    "conversation": "channel",
    "article": None,
    "order": "order",
    "product": None,
    "customer": "contact",
    "invoice": None,
    "subscription": None,
    "payment": None,
    "refund": None,
    "channel": "channel",
    "message": None,
    "project": None,
    "task": "ticket",
    "milestone": None,
    "campaign": None,
    "list": None,
    "segment": None,
    "file": None,
    "folder": None,
    "employee": "contact",
    "shipment": None,
    "event": None,
    "report": None,
    "comment": None,
    "webhook": None,
}
_VERBS = ("list", "get", "create", "update", "delete", "search")
_STATUSES = (
    ("open", "pending", "closed", "archived"),
    ("draft", "active", "paused", "cancelled", "completed"),
    ("new", "in_progress", "blocked", "done"),
    ("trialing", "active", "past_due", "canceled", "unpaid"),
    ("queued", "sent", "delivered", "failed", "bounced"),
)
_FIELD_WORDS = (
    "priority",
    "source",
    "channel",
    "category",
    "region",
    "locale",
    "timezone",
    "reference",
    "external_id",
    "label",
    "notes",
    "score",
    "rating",
    "quantity",
    "weight",
    "duration",
    "position",
    "stage",
    "owner_email",
    "phone",
    "website",
    "industry",
    "language",
    "summary",
    "color",
    "visibility",
    "revision",
    "sequence",
    "probability",
    "discount",
)
_PHRASES = (
    "Use it when the user asks about {res}s by name, status or date.",
    "Results are scoped to the workspace's own {app} account and respect its permissions.",
    "Prefer the search tool when only part of a name or email is known.",
    "Timestamps are RFC 3339 in UTC; amounts are decimal strings in the record's currency.",
    "Fields the upstream API does not return are null rather than missing.",
    "Call it before making changes so that ids and current values are known.",
    "It never sends notifications to the {res}'s followers.",
    "Large accounts can hold thousands of {res}s: narrow the query instead of paging through all.",
    "The response mirrors the {app} REST API, renamed to snake_case where needed.",
    "Archived {res}s are included only when asked for explicitly.",
)


@dataclass(frozen=True)
class Catalog:
    root: Path
    connectors: tuple[str, ...]
    connector_tools: int
    fixed_tools: int

    @property
    def tools(self) -> int:
        return self.connector_tools + self.fixed_tools

    def connector_file(self, name: str) -> Path:
        return self.root / "manifests" / "connectors" / f"{name}.yaml"


class _Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def pick(self, seq: Any) -> Any:
        return seq[self.r.randrange(len(seq))]

    def sentence(self, **fmt: str) -> str:
        return self.pick(_PHRASES).format(**fmt)

    # ------------------------------------------------------------------ records

    def record(self, res: str, app: str) -> tuple[dict[str, Any], list[str]]:
        """The schema of one resource record and the names of its writable fields."""
        r = self.r
        int_id = r.random() < 0.3
        props: dict[str, Any] = {
            "id": {"type": "integer", "minimum": 1}
            if int_id
            else {"type": "string", "description": f"{app.title()} id of the {res}."},
            "name": {"type": "string", "maxLength": 255},
            "status": {"type": "string", "enum": list(self.pick(_STATUSES))},
            "created_at": {"$ref": "#/types/Timestamp"},
            "updated_at": {"$ref": "#/types/Timestamp"},
        }
        writable = ["name", "status"]
        for word in r.sample(_FIELD_WORDS, r.randint(4, 10)):
            kind = r.random()
            if kind < 0.35:
                schema: dict[str, Any] = {"type": ["string", "null"]}
            elif kind < 0.5:
                schema = {"type": ["integer", "null"], "minimum": 0}
            elif kind < 0.6:
                schema = {"type": ["number", "null"]}
            elif kind < 0.7:
                schema = {"type": "boolean"}
            elif kind < 0.8:
                schema = {"type": "string", "format": self.pick(("email", "uri", "date"))}
            else:
                schema = {"type": "string", "enum": [f"{word}_{i}" for i in range(r.randint(2, 6))]}
            if r.random() < 0.5:
                schema["description"] = (
                    f"The {res}'s {word.replace('_', ' ')} as shown in {app.title()}."
                )
            props[word] = schema
            writable.append(word)
        if r.random() < 0.6:
            props["owner"] = {"$ref": "#/types/SynthPerson", "description": f"Who owns the {res}."}
        if r.random() < 0.5:
            props["address"] = {"$ref": "#/types/SynthAddress"}
            writable.append("address")
        if r.random() < 0.5:
            props["amount"] = {"$ref": "#/types/SynthMoney"}
        if r.random() < 0.6:
            item = self.record_item(res)
            props[f"{res}_items" if r.random() < 0.5 else "lines"] = {
                "type": "array",
                "items": item,
                "description": f"Line items of the {res}, in display order.",
            }
        if r.random() < 0.5:
            props["tags"] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
            writable.append("tags")
        if r.random() < 0.4:
            props["metadata"] = {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Free-form key/value pairs set by integrations.",
            }
        if r.random() < 0.3:
            props["stats"] = {
                "type": ["object", "null"],
                "properties": {
                    "views": {"type": "integer"},
                    "replies": {"type": "integer"},
                    "last_activity_at": {"$ref": "#/types/Timestamp"},
                },
            }
        return {
            "type": "object",
            "required": ["id", "name", "created_at"],
            "properties": props,
        }, writable

    def record_item(self, res: str) -> dict[str, Any]:
        r = self.r
        props: dict[str, Any] = {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "quantity": {"type": "integer", "minimum": 0},
            "unit_price": {"$ref": "#/types/SynthMoney"},
        }
        if r.random() < 0.5:
            props["sku"] = {"type": ["string", "null"], "pattern": "^[A-Z0-9-]+$"}
        if r.random() < 0.5:
            props["kind"] = {"type": "string", "enum": ["physical", "digital", "service"]}
        return {"type": "object", "required": ["id", "title"], "properties": props}

    # ------------------------------------------------------------------ capabilities

    def capability(
        self, app: str, kind: str, res: str, verb: str, record: dict[str, Any], writable: list[str]
    ) -> dict[str, Any]:
        r = self.r
        id_name = f"{res}_id"
        id_schema: dict[str, Any] = dict(record["properties"]["id"])
        id_schema["description"] = f"Id of the {res} (from list_{res}s or search_{res}s)."
        plural = f"{res}s"
        extra = " ".join(self.sentence(res=res, app=app.title()) for _ in range(r.randint(1, 3)))
        noun = plural if verb in ("list", "search") else res
        cap: dict[str, Any] = {
            "name": f"{verb}_{noun}",
            "title": f"{verb.title()} {app.title()} {noun}",
        }
        entity = _RESOURCES[res]
        if verb == "list":
            cap["description"] = (
                f"List the {plural} of the connected {app.title()} {kind} account, newest first, "
                f"with their status, owner and timestamps. Filter by status or creation date. "
                f"{extra} Returns one page of {plural}; pass next_cursor back as cursor for more."
            )
            inp = {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "status": {
                        "type": "string",
                        "enum": record["properties"]["status"]["enum"],
                        "description": f"Only {plural} in this status.",
                    },
                    "created_after": {"$ref": "#/types/Timestamp"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 25},
                },
            }
            out = {
                "type": "object",
                "required": [plural],
                "properties": {
                    plural: {"type": "array", "items": record},
                    "total": {
                        "type": ["integer", "null"],
                        "description": "Total matches, if known.",
                    },
                },
            }
            style = self.pick(("cursor", "page", "link"))
            pagination: dict[str, Any] = {"style": style}
            if style == "cursor":
                pagination.update(param="cursor", next="meta.next_cursor")
            elif style == "page":
                pagination["param"] = "page"
            http: dict[str, Any] = {
                "method": "GET",
                "path": f"/{plural}",
                "query": {
                    "status": "{status}",
                    "created_after": "{created_after}",
                    "limit": "{limit}",
                },
                "response": {"fields": {plural: "data", "total": "meta.total"}},
                "pagination": pagination,
            }
            annotations = {"read_only": True, "idempotent": True, "open_world": True}
            scope = "read"
        elif verb == "search":
            cap["description"] = (
                f"Search {app.title()} {plural} by free text (name, email, reference) and return "
                f"the best matches with their key fields. {extra} Returns up to limit {plural}."
            )
            inp = {
                "type": "object",
                "additionalProperties": False,
                "required": ["query"],
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 500},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                },
            }
            out = {
                "type": "object",
                "required": ["results"],
                "properties": {"results": {"type": "array", "items": record}},
            }
            http = {
                "method": "POST",
                "path": f"/{plural}/search",
                "body": {"query": "{query}", "limit": "{limit}"},
                "response": {"fields": {"results": "results"}},
            }
            annotations = {"read_only": True, "idempotent": True, "open_world": True}
            scope = "read"
        elif verb == "get":
            cap["description"] = (
                f"Get one {app.title()} {res} by id with all its fields. {extra} Returns the "
                f"{res}, or a not_found error when the id is unknown."
            )
            inp = {
                "type": "object",
                "additionalProperties": False,
                "required": [id_name],
                "properties": {id_name: id_schema},
            }
            out = record
            http = {
                "method": "GET",
                "path": f"/{plural}/{{{id_name}}}",
                "response": {"select": "data"},
            }
            annotations = {"read_only": True, "idempotent": True, "open_world": True}
            scope = "read"
        elif verb in ("create", "update"):
            fields = writable[: r.randint(3, len(writable))]
            props: dict[str, Any] = {}
            if verb == "update":
                props[id_name] = id_schema
            for f in fields:
                src = dict(record["properties"][f])
                props[f] = src
            cap["description"] = (
                f"{'Create a new' if verb == 'create' else 'Change an existing'} {app.title()} "
                f"{res}. Only the fields given are {'set' if verb == 'create' else 'changed'}. "
                f"{extra} Returns the {res} as stored."
            )
            required = [id_name] if verb == "update" else ["name"]
            inp = {
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": props,
            }
            out = record
            body = {f: f"{{{f}}}" for f in fields}
            http = {
                "method": "POST" if verb == "create" else "PATCH",
                "path": f"/{plural}" if verb == "create" else f"/{plural}/{{{id_name}}}",
                "body": body,
                "response": {"select": "data"},
            }
            annotations = {
                "read_only": False,
                "destructive": False,
                "idempotent": verb == "update",
                "open_world": True,
            }
            scope = "write"
        else:  # delete
            cap["description"] = (
                f"Delete a {app.title()} {res} permanently. It cannot be undone: confirm with the "
                f"user first. {extra} Returns the id of the deleted {res}."
            )
            inp = {
                "type": "object",
                "additionalProperties": False,
                "required": [id_name],
                "properties": {id_name: id_schema},
            }
            out = {
                "type": "object",
                "required": ["deleted"],
                "properties": {
                    "deleted": {"type": "boolean"},
                    "id": {"type": ["string", "integer"]},
                },
            }
            http = {"method": "DELETE", "path": f"/{plural}/{{{id_name}}}"}
            annotations = {
                "read_only": False,
                "destructive": True,
                "idempotent": True,
                "open_world": True,
            }
            scope = "write"
        cap.update(scope=scope, annotations=annotations, input=inp, output=out, http=http)
        if entity and verb in ("list", "search"):
            items = plural if verb == "list" else "results"
            cap["entities"] = [self.entity(entity, items, inp, record)]
        return cap

    def entity(
        self, entity: str, items: str, inp: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """An entity mapping that `gen build` accepts: args that are inputs of the capability,
        field paths that the record schema has."""
        fields = {
            "contact": {"id": "id", "first_name": "name", "email": "owner.email"},
            "order": {
                "id": "id",
                "number": "name",
                "status": "status",
                "created_at": "created_at",
                "total": "amount.value",
            },
            "channel": {"id": "id", "name": "name"},
            "ticket": {"id": "id", "title": "name", "state": "status", "created_at": "created_at"},
        }[entity]
        present = record.get("properties", {})
        inputs = inp.get("properties", {})
        return {
            "type": entity,
            "items": items,
            "args": {k: f"{{{k}}}" for k in ("query", "limit") if k in inputs},
            "fields": {k: v for k, v in fields.items() if v.split(".")[0] in present},
        }

    def connector(self, index: int, capabilities: int) -> dict[str, Any]:
        r = self.r
        app = f"{_APPS[index % len(_APPS)]}{index // len(_APPS) + 1}"
        kind = self.pick(_KINDS)
        resources = r.sample(list(_RESOURCES), max(1, math.ceil(capabilities / len(_VERBS))))
        caps = []
        for res in resources:
            record, writable = self.record(res, app)
            for verb in _VERBS:
                if len(caps) < capabilities:
                    caps.append(self.capability(app, kind, res, verb, record, writable))
        auth_type = self.pick(("bearer", "api_key", "basic"))
        if auth_type == "bearer":
            auth = {
                "type": "bearer",
                "token_field": "access_token",
                "fields": [
                    {
                        "name": "access_token",
                        "title": "Access token",
                        "description": f"Personal or app token of the {app.title()} account.",
                    }
                ],
            }
        elif auth_type == "api_key":
            auth = {
                "type": "api_key",
                "header": "X-Api-Key",
                "key_field": "api_key",
                "fields": [
                    {"name": "api_key", "title": "API key"},
                    {
                        "name": "region",
                        "title": "Region",
                        "secret": False,
                        "description": "Data region of the account (us, eu).",
                    },
                ],
            }
        else:
            auth = {
                "type": "basic",
                "username_field": "email",
                "password_field": "api_token",
                "fields": [
                    {"name": "email", "secret": False},
                    {"name": "api_token", "title": "API token"},
                ],
            }
        base = (
            f"https://{{region}}.api.{app}.example/v2"
            if auth_type == "api_key"
            else f"https://api.{app}.example/v1"
        )
        return {
            "version": 1,
            "kind": "connector",
            "name": app,
            "title": f"{app.title()} {kind.upper()}",
            "description": (
                f"{app.title()} {kind}: read and change {', '.join(resources[:3])} "
                f"records of the workspace's {app.title()} account."
            ),
            "base_url": base,
            "timeout_seconds": 20,
            "retries": 2,
            "auth": auth,
            "errors": {"message_field": "error.message", "auth_errors": ["unauthorized"]},
            "capabilities": caps,
        }


SHARED_TYPES: dict[str, Any] = {
    "version": 1,
    "kind": "types",
    "types": {
        "SynthMoney": {
            "type": "object",
            "required": ["value", "currency"],
            "properties": {
                "value": {
                    "type": "string",
                    "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
                    "description": "Decimal amount as a string.",
                },
                "currency": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 3,
                    "description": "ISO 4217 code.",
                },
            },
        },
        "SynthAddress": {
            "type": ["object", "null"],
            "properties": {
                "line1": {"type": "string"},
                "line2": {"type": ["string", "null"]},
                "city": {"type": "string"},
                "postal_code": {"type": ["string", "null"]},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
            },
        },
        "SynthPerson": {
            "type": ["object", "null"],
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "email": {"type": ["string", "null"], "format": "email"},
                "display_name": {"type": ["string", "null"]},
                "role": {"type": "string", "enum": ["owner", "admin", "member", "guest"]},
            },
        },
    },
}


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=100, allow_unicode=True)


def write_project(root: Path, *, tools: int, per_connector: int = 20, seed: int = 0) -> Catalog:
    """Write a fresh scratch project with `tools` connector tools under `root`."""
    if (root / "manifests").exists():
        shutil.rmtree(root / "manifests")
    conn_dir = root / "manifests" / "connectors"
    conn_dir.mkdir(parents=True)
    gen = _Gen(seed)
    n_conn = max(1, math.ceil(tools / per_connector))
    names = []
    left = tools
    for i in range(n_conn):
        count = min(per_connector, left)
        left -= count
        data = gen.connector(i, count)
        names.append(data["name"])
        (conn_dir / f"{data['name']}.yaml").write_text(dump(data), encoding="utf-8")
    for name in FIXED_MANIFESTS:
        shutil.copyfile(DEFAULT_MANIFESTS / name, root / "manifests" / name)
    (root / "manifests" / "synthetic_types.yaml").write_text(dump(SHARED_TYPES), encoding="utf-8")
    gateway = yaml.safe_load((DEFAULT_MANIFESTS / "gateway.yaml").read_text(encoding="utf-8"))
    for tenant in gateway.get("tenants", []):
        tenant["connectors"] = names[: len(tenant["connectors"])]
    for plan in gateway.get("quotas", {}).get("plans", {}).values():
        if "per_connector" in plan:
            plan["per_connector"] = {names[0]: 100000}
    (root / "manifests" / "gateway.yaml").write_text(dump(gateway), encoding="utf-8")
    fixed = _count_fixed_tools()
    return Catalog(root=root, connectors=tuple(names), connector_tools=tools, fixed_tools=fixed)


def _count_fixed_tools() -> int:
    n = 0
    for name in ("native.yaml", "personalization.yaml"):
        data = yaml.safe_load((DEFAULT_MANIFESTS / name).read_text(encoding="utf-8"))
        n += len(data.get("tools", []))
    return n


def edit_one_connector(catalog: Catalog, *, round: int = 1) -> Path:
    """Change one capability description of the middle connector (a typical one-line edit)."""
    name = catalog.connectors[len(catalog.connectors) // 2]
    path = catalog.connector_file(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cap = data["capabilities"][0]
    cap["description"] = cap["description"] + f" (Edited, round {round}.)"
    path.write_text(dump(data), encoding="utf-8")
    return path

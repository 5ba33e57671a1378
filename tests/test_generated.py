"""The committed generated package is executed, not only diffed: its models round-trip payloads
for every tool, its catalog matches tools.json, and mypy accepts it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import mcp.types as mcp_types
import pytest
from helpers import ROOT

GENERATED = ROOT / "generated"
PKG = "fastn_gateway"

_FORMAT_SAMPLES = {
    "date-time": "2026-11-21T05:00:00Z",
    "email": "ash@example.com",
    "date": "2026-11-21",
    "uri": "https://example.com/x",
}


def sample(schema: dict[str, Any], depth: int = 0) -> Any:
    """A valid instance that uses every declared property (one item per array)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type", "object")
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if t == "object":
        props = schema.get("properties", {})
        return {k: sample(v, depth + 1) for k, v in props.items()} if depth < 8 else {}
    if t == "array":
        return [sample(schema.get("items", {"type": "string"}), depth + 1)]
    if t == "string":
        if "format" in schema and schema["format"] in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[schema["format"]]
        return "x" * max(1, schema.get("minLength", 1))
    if t == "integer":
        return max(1, schema.get("minimum", 1))
    if t == "number":
        return schema.get("minimum", 0.5) if "maximum" in schema else 1.5
    if t == "boolean":
        return True
    return None


@pytest.fixture(scope="module")
def catalog(generated_on_path: Path) -> Any:
    return importlib.import_module(f"{PKG}.catalog").GATEWAY


def _tool_names() -> list[str]:
    return [t["name"] for t in json.loads((GENERATED / "tools.json").read_text())["tools"]]


@pytest.mark.parametrize("name", _tool_names())
def test_models_round_trip_a_payload_with_every_field(catalog: Any, name: str) -> None:
    spec = catalog.tools[name]
    models = importlib.import_module(f"{PKG}.models.{spec.group}")
    for schema, model_name in (
        (spec.input_schema, spec.input_model),
        (spec.output_schema, spec.output_model),
    ):
        payload = sample(dict(schema))
        jsonschema.Draft202012Validator(schema).validate(payload)
        model = getattr(models, model_name)
        parsed = model.model_validate(payload)
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == payload


def test_input_models_reject_what_the_schema_rejects(catalog: Any) -> None:
    models = importlib.import_module(f"{PKG}.models.slack")
    with pytest.raises(Exception, match="extra|Extra"):
        models.SlackSendMessageInput.model_validate({"channel": "C1", "text": "hi", "bogus": 1})
    with pytest.raises(Exception, match="text"):
        models.SlackSendMessageInput.model_validate({"channel": "C1"})


def test_tools_json_is_the_catalog_as_mcp_tools(catalog: Any) -> None:
    doc = json.loads((GENERATED / "tools.json").read_text())
    assert [t["name"] for t in doc["tools"]] == sorted(catalog.tools)
    for raw in doc["tools"]:
        tool = mcp_types.Tool.model_validate(raw)
        spec = catalog.tools[tool.name]
        assert tool.input_schema == dict(spec.input_schema)
        assert tool.output_schema == dict(spec.output_schema)
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint == spec.annotations.read_only
        # session-bound parameters never reach the model-visible schema
        assert not set(spec.bind) & set(tool.input_schema.get("properties", {}))


def test_seed_tool_surface_is_present(catalog: Any) -> None:
    names = set(catalog.tools)
    assert {
        "fastn_list_integrations",
        "fastn_get_integration_status",
        "fastn_create_flow",
        "fastn_get_event_history",
        "fastn_get_usage_summary",
        "fastn_search_entities",
        "slack_send_message",
        "slack_list_channels",
        "shopify_list_orders",
        "shopify_get_customer",
        "retrieve_relevant_chunks",
        "search_or_ask",
        "update_memory",
    } <= names
    assert len(catalog.connectors) >= 3


def test_mypy_accepts_the_generated_package() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--ignore-missing-imports",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            PKG,
        ],
        cwd=GENERATED,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]

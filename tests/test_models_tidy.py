"""`emit.models.tidy`: datamodel-code-generator's output made friendlier to type against, on its
real output for schemas that trigger each repair, checked by importing the result."""

from __future__ import annotations

import itertools
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from generator.compile import for_models
from generator.datamodel import generate
from generator.emit.models import tidy


def _module(source: str, *, strict: bool = True) -> types.ModuleType:
    """Import `source` as a module (warnings are errors when strict)."""
    name = f"tidied_{next(_COUNT)}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # Pydantic resolves annotations in the class's module
    try:
        with warnings.catch_warnings():
            if strict:
                warnings.simplefilter("error")
            exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


_COUNT = itertools.count()


def _tool(props: dict[str, object], out: dict[str, object] | None = None) -> str:
    """The models of one tool, from its schemas as the build gives them (`for_models`)."""
    schema = for_models({"type": "object", "properties": props})
    output = for_models(out or {"type": "object"})
    return generate({"tools": [{"name": "t", "inputSchema": schema, "outputSchema": output}]})


def test_a_constrained_list_item_becomes_an_alias_and_values_stay_plain() -> None:
    props = {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}}
    raw = _tool(props, {"type": "object", "properties": props})
    assert "RootModel" in raw
    source = tidy(raw, {"TInput", "TOutput"})
    assert "RootModel" not in source
    assert "TInputTag = Annotated[str, Field(max_length=3)]" in source
    module = _module(source)
    assert module.TOutput.model_validate({"tags": ["ab"]}).tags == ["ab"]  # str, not a wrapper
    with pytest.raises(ValidationError):
        module.TInput(tags=["long"])


def test_tool_models_and_forward_references_stay_classes() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    tools = [{"name": "t", "inputSchema": {"type": "object"}, "outputSchema": schema}]
    raw = generate({"tools": tools})
    assert tidy(raw, {"TInput", "TOutput"}) == raw  # the tool's own RootModel is kept
    forward = (
        "from pydantic import BaseModel, RootModel\n\n"
        "class Early(RootModel[list[Late]]):\n    root: list[Late]\n\n"
        "class Late(BaseModel):\n    x: int\n"
    )
    assert tidy(forward, set()) == forward  # an alias would fail on import


def test_fields_named_like_pydantic_methods_import_without_warnings() -> None:
    raw = _tool({"model_dump": {"type": "string"}, "model_validate": {"type": "integer"}})
    with pytest.warns(UserWarning, match="protected namespace"):
        _module(raw, strict=False)
    module = _module(tidy(raw, {"TInput", "TOutput"}))
    value = module.TInput.model_validate({"model_dump": "x", "model_validate": 1})
    assert value.model_dump(by_alias=True) == {"model_dump": "x", "model_validate": 1}


def test_a_uri_stays_the_string_it_was() -> None:
    raw = _tool({"home": {"type": "string", "format": "uri"}})
    assert "AnyUrl" not in raw
    module = _module(raw)
    url = "HTTPS://Example.COM:443/a b?x=1"
    assert module.TInput(home=url).model_dump() == {"home": url}


def _mypy_errors(source: str, tmp_path: Path) -> str:
    path = tmp_path / "models.py"
    path.write_text(source, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    return proc.stdout


def test_an_object_default_moves_into_field_and_type_checks(tmp_path: Path) -> None:
    item = {"type": "object", "properties": {"a": {"type": "integer"}}}
    props = {
        "opts": {**item, "default": {"a": 1}},
        "rowList": {"type": "array", "items": item, "default": [{"a": 2}], "description": "d"},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["x"]},
    }
    raw = _tool(props)
    assert "incompatible type" in _mypy_errors(raw, tmp_path).lower()  # {'a': 1} is no model
    source = tidy(raw, {"TInput", "TOutput"})
    assert "opts: TInputOpts | None = Field({'a': 1}, validate_default=True)" in source
    assert _mypy_errors(source, tmp_path) == ""
    module = _module(source)
    first, second = module.TInput(), module.TInput()
    assert first.model_dump(by_alias=True) == {
        "opts": {"a": 1},
        "rowList": [{"a": 2}],
        "tags": ["x"],
    }
    assert isinstance(first.opts, module.TInputOpts) and first.opts is not second.opts
    assert module.TInput.model_fields["row_list"].description == "d"
    assert module.TInput.model_validate({"rowList": []}).row_list == []

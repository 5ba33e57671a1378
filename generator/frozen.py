"""`frozen`: the frozen, slotted, keyword-only dataclass of the IR, made cheap to pickle.

The build cache pickles compiled connectors (tens of thousands of IR nodes at 5,000 tools).
`dataclasses` gives a frozen slotted class `__getstate__`/`__setstate__` methods that look the
fields up again for every object; unpickling spent most of its time there. These classes reduce
to their field values in declaration order and are rebuilt without running `__init__` (the
values were checked when the original was built).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar, dataclass_transform

_C = TypeVar("_C", bound=type)

_FIELDS: dict[type, tuple[str, ...]] = {}
_set = object.__setattr__


def _restore(cls: type, values: tuple[Any, ...]) -> Any:
    obj: Any = object.__new__(cls)
    for name, value in zip(_FIELDS[cls], values, strict=True):
        _set(obj, name, value)
    return obj


def _reduce(self: Any) -> tuple[Any, ...]:
    cls = type(self)
    return (_restore, (cls, tuple([getattr(self, name) for name in _FIELDS[cls]])))


@dataclass_transform(frozen_default=True, kw_only_default=True)
def frozen(cls: _C | None = None, /, *, order: bool = False) -> Any:
    def make(c: _C) -> _C:
        made: Any = dataclass(frozen=True, slots=True, kw_only=True, order=order)(c)
        _FIELDS[made] = tuple(f.name for f in fields(made))
        made.__reduce__ = _reduce  # type: ignore[assignment]
        return made

    return make if cls is None else make(cls)

"""Stage 1, load: manifest files -> `Loaded` documents (plain data plus a source map).

YAML is composed into nodes (libyaml when available) and converted by hand so that every value
and every mapping key keeps its line and column. Only JSON-compatible scalars come out: a
timestamp-looking scalar such as `2026-12-31` stays a string, and booleans and numbers are YAML
1.2's core schema (only `true` and `false`: `NO`, `yes`, `on` stay strings; `017` is 17, and
`1:30`, `1_000`, `0b101` stay strings), so YAML 1.1's implicit typing cannot surprise the schema.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .diagnostics import UNSAFE_IN_NAMES, Diagnostic, Span, error, printable, shortened
from .runtime.fastschema import MAX_INTEGER_BITS

JsonPath = tuple[str | int, ...]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"

# YAML 1.2's core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution). Python's int() and
# float() alone would take more (`1_000`, ` 1`, Unicode digits): the text is matched first.
_CORE_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_CORE_INT = re.compile(r"[-+]?[0-9]+\Z|0o[0-7]+\Z|0x[0-9a-fA-F]+\Z")
_CORE_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z"
    r"|[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z"
)
# Past this many digits (leading zeros aside) a decimal integer exceeds MAX_INTEGER_BITS; int()
# is not even asked (past 4,300 digits it refuses).
_MAX_DECIMAL_DIGITS = len(str(2**MAX_INTEGER_BITS))


def _core_schema_loader(base: type[yaml.resolver.BaseResolver]) -> type:
    """`base` resolving booleans and numbers as YAML 1.2's core schema does. Booleans are only
    true/false (all lower, capitalised or upper case): YAML 1.1's yes/no/on/off/y/n in any case
    are strings, so `enum: [SE, NO, DK]` keeps Norway and `read_only: yes` is a located type
    error. Integers are decimal (`017` is 17, not YAML 1.1's octal 15), `0o17` or `0x1F`; floats
    are `1.5`, `.5`, `+1e3`, `.inf`, `.nan`. YAML 1.1's `1:30` (sexagesimal 90), `1_000`, `0b101`
    and `-0x1F` are strings."""
    core = {_BOOL_TAG: _CORE_BOOL, _INT_TAG: _CORE_INT, _FLOAT_TAG: _CORE_FLOAT}
    resolvers = {
        first: [(tag, regexp) for tag, regexp in pairs if tag not in core]
        for first, pairs in base.yaml_implicit_resolvers.items()
    }
    # an integer is tried before a float, which `17` also matches
    for tag, firsts in reversed(
        [(_BOOL_TAG, "tTfF"), (_INT_TAG, "-+0123456789"), (_FLOAT_TAG, "-+.0123456789")]
    ):
        for first in firsts:
            resolvers.setdefault(first, []).insert(0, (tag, core[tag]))
    return type(base.__name__, (base,), {"yaml_implicit_resolvers": resolvers})


def _core_int(text: str) -> int | None:
    """A YAML 1.2 core schema integer's value (None: the text is not one). OverflowError: a
    decimal too long to be converted."""
    if not _CORE_INT.match(text):
        return None
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    if len(text.lstrip("-+").lstrip("0")) > _MAX_DECIMAL_DIGITS:
        raise OverflowError(text)
    return int(text)


def _core_float(text: str) -> float | None:
    """A YAML 1.2 core schema float's value (None: the text is not one)."""
    if not _CORE_FLOAT.match(text):
        return None
    if text[-3:].lower() == "inf":
        return -math.inf if text.startswith("-") else math.inf
    if text[-3:].lower() == "nan":
        return math.nan
    return float(text)


_LIBYAML = hasattr(yaml, "CSafeLoader")
_Loader: type = _core_schema_loader(yaml.CSafeLoader if _LIBYAML else yaml.SafeLoader)
_JSON_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
}

# Every other tag (`!custom`, `!!binary`, `!!set`, `!!python/...`) is refused: manifests are
# plain YAML, JSON's data model. Dates stay strings.
_PLAIN_TAGS = _JSON_SCALAR_TAGS | {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:merge",
}


# Source maps are recorded while loading for paths of at most this many parts: everything the
# compiler and the IR point at on a clean build (a capability's name, its http binding, an entity
# mapping). Deeper positions (a property inside a schema) are only needed for diagnostics; the
# first question about one re-reads the file's text once and completes the map. Answers are the
# same either way; only the cost of loading a large manifest changes (about half of it).
SPAN_DEPTH = 4

# Bounds on what one document may expand to: nesting depth, and values built (YAML aliases
# make a few hundred bytes expand to billions of values). Real manifests stay far below both.
MAX_NESTING = 100
MAX_VALUES = 1_000_000
# What YAML aliases (`*name`, and merge keys `<<: *name`) may add to a document: values built
# again for an alias, and the characters of the strings and keys among them. MAX_VALUES alone let
# a few hundred bytes become a million values, each of which later stages walk (a template's
# placeholders are checked per string: seconds to minutes) and a build writes into the generated
# package. Reusing an anchor a few times, the legitimate use, adds a few hundred values; the
# bound is what one tool schema may hold (GEN227). Shared schemas belong in types.yaml anyway.
MAX_ALIASED_VALUES = 20_000
MAX_ALIASED_CHARS = 1_000_000


class _TooBig(Exception):
    """The document exceeds MAX_NESTING, MAX_VALUES or what aliases may add (raised out of the
    recursion)."""

    def __init__(self, node: yaml.Node, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Loaded:
    """One manifest file: its bytes' digest (`source_digest`), its data, and where each value
    came from."""

    path: str  # relative to the project root, with forward slashes
    sha256: str
    data: Any
    value_spans: dict[JsonPath, Span] = field(repr=False)
    key_spans: dict[JsonPath, Span] = field(repr=False)
    # the YAML style of each quoted or block scalar ('"', "'", '|', '>'); plain ones are absent
    styles: dict[JsonPath, str] = field(repr=False)
    # the text, while the maps above hold only paths of at most SPAN_DEPTH parts
    _text: str | None = field(default=None, repr=False, compare=False)

    def _complete(self, p: JsonPath, spans: dict[JsonPath, Span]) -> None:
        if len(p) <= SPAN_DEPTH or self._text is None or p in spans:
            return
        with _collector_paused():
            node = yaml.compose(self._text, Loader=_Loader)
            builder = _Builder(self.path, depth=None, positions=Positions(self._text))
            builder.build(node, ())
        self.value_spans.update(builder.value_spans)
        self.key_spans.update(builder.key_spans)
        self.styles.update(builder.styles)
        object.__setattr__(self, "_text", None)

    def span(self, path: Iterable[str | int] = ()) -> Span:
        """Position of the value at `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        self._complete(p, self.value_spans)
        while p:
            if p in self.value_spans:
                return self.value_spans[p]
            p = p[:-1]
        return self.value_spans.get((), Span(file=self.path))

    def scalar_style(self, path: Iterable[str | int]) -> str | None:
        """How the scalar at `path` is written: '"' or "'" quoted, '|' or '>' a block scalar,
        None plain (or no scalar there)."""
        p = tuple(path)
        self._complete(p, self.value_spans)
        return self.styles.get(p)

    def key_span(self, path: Iterable[str | int]) -> Span:
        """Position of the mapping key that ends `path` (falls back to the value)."""
        p = tuple(path)
        self._complete(p, self.key_spans)
        return self.key_spans.get(p) or self.span(p)


def display_path(path: Path, root: Path) -> str:
    """How diagnostics name a file: relative to the project root (`../x.yaml` when the
    manifests live outside it), with forward slashes."""
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


_UNREADABLE_HINT = (
    "make it readable, or move it out of the manifest directory: the manifests in it cannot be "
    "left out unnoticed"
)
_LOOP_HINT = "remove the link: the directory it leads to is searched already"


def discover(root: Path, manifest_dir: Path) -> tuple[list[Path], list[Diagnostic]]:
    """Every `*.yaml` / `*.yml` under the manifest directory, in a stable order, and GEN001 for
    each part of it that could not be searched.

    Directories are searched at any depth, through symbolic links as files are (a manifest
    directory may link in manifests kept elsewhere). A directory that cannot be read, or a link
    that leads back to a directory holding it (a loop), is an error at it, not a silent gap:
    the manifests it holds would be missing, and a build would remove their generated files.
    Names starting with `.` are skipped, files and directories: editors' lock files (Emacs's
    `.#slack.yaml`, a link to nowhere) and backups (`.slack.yaml`) are not manifests, nor is
    what a hidden directory (`.git`, `.cache`) holds."""
    if not manifest_dir.is_dir():
        return [], []
    files: list[Path] = []
    problems: list[Diagnostic] = []

    def unreadable(path: Path, message: str, hint: str = _UNREADABLE_HINT) -> None:
        problems.append(error("GEN001", Span(file=display_path(path, root)), message, hint))

    top = manifest_dir.stat()
    # each directory to search, with the (device, inode) of it and of each directory holding it
    stack: list[tuple[Path, dict[tuple[int, int], Path]]] = [
        (manifest_dir, {(top.st_dev, top.st_ino): manifest_dir})
    ]
    while stack:
        directory, holders = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as exc:
            unreadable(directory, f"cannot read directory: {exc.strerror}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = directory / entry.name
            try:
                if entry.is_dir():  # through a link too
                    st = entry.stat()
                    loop = holders.get((st.st_dev, st.st_ino))
                    if loop is not None:
                        where = display_path(loop, root)
                        unreadable(path, f"directory link loops back to {where}", _LOOP_HINT)
                    else:
                        stack.append((path, {**holders, (st.st_dev, st.st_ino): path}))
                elif path.suffix in {".yaml", ".yml"} and (
                    entry.is_file() or (entry.is_symlink() and not path.exists())
                ):
                    files.append(path)  # a link to nowhere too: loading reports it
            except OSError as exc:
                unreadable(path, f"cannot read: {exc.strerror}")
    return sorted(files, key=lambda p: display_path(p, root)), problems


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a manifest is composed and converted. That
    allocates a node, marks, and a dict or list per value, all alive to the end and (but for a
    recursive alias, refused) free of cycles, and every 700 allocations set off a collection
    that walked them again: three full ones and 400 young ones for 1 MB, half the load's time.
    Whatever cycles are left are collected after, as usual."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def source_digest(raw: bytes) -> str:
    """The sha256 that names a manifest's bytes (generated headers, the build cache): of the
    bytes with each line ending written LF, as YAML reads them (a CR LF or a lone CR is a
    line break, inside a scalar's text too). A checkout with CR LF line endings (Windows,
    git's core.autocrlf) so generates the same output as one with LF, and the digest of a file
    with LF line endings is its `sha256sum`."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).hexdigest()


def load_text(rel_path: str, raw: bytes) -> tuple[Loaded | None, list[Diagnostic]]:
    """Parse one manifest's bytes. Returns no document when it cannot be parsed at all."""
    with _collector_paused():
        return _load_text(rel_path, raw)


def _load_text(rel_path: str, raw: bytes) -> tuple[Loaded | None, list[Diagnostic]]:
    digest = source_digest(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [error("GEN001", Span(file=rel_path), f"file is not UTF-8 (byte {exc.start})")]
    positions = Positions(text)
    deep = _nested_too_deep(text)
    if deep is not None:
        line, col = positions.of_mark(deep)
        return None, [error("GEN002", Span(file=rel_path, line=line, col=col), _TOO_DEEP)]
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except RecursionError:
        return None, [error("GEN002", Span(file=rel_path), _TOO_DEEP)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = positions.span(rel_path, mark) if mark else Span(file=rel_path)
        if mark and positions.char_at(span.line, span.col) == "\t":
            # libyaml's "found character that cannot start any token" does not say which one
            return None, [error("GEN002", span, _TAB, "replace the tab with spaces")]
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        hint = None
        if mark and problem.startswith("mapping values are not allowed"):
            hint = _colon_in_plain_text(positions.line(span.line), span.col)
        return None, [error("GEN002", span, f"YAML syntax error: {problem}{context}", hint)]
    except yaml.YAMLError as exc:  # e.g. a reader error: a character YAML does not allow
        mark = getattr(exc, "position", None)
        line, col = positions.of_reader_offset(mark) if isinstance(mark, int) else (1, 1)
        reason = getattr(exc, "reason", None) or "invalid YAML"
        return None, [
            error("GEN002", Span(file=rel_path, line=line, col=col), f"YAML syntax error: {reason}")
        ]
    if len(nodes) != 1 or not isinstance(nodes[0], yaml.MappingNode):
        where = Span(file=rel_path)
        if len(nodes) > 1:
            where = positions.span(rel_path, nodes[1].start_mark)
            msg = "a manifest holds exactly one YAML document; found several"
        elif not nodes:
            msg = "manifest is empty"
        else:
            where = positions.span(rel_path, nodes[0].start_mark)
            msg = "a manifest must be a mapping (`version: 1`, `kind: ...`)"
        return None, [error("GEN004", where, msg)]
    builder = _Builder(rel_path, positions=positions)
    try:
        data = builder.build(nodes[0], ())
    except _TooBig as exc:
        return None, [error("GEN002", builder._span(exc.node), str(exc), exc.hint)]
    loaded = Loaded(
        path=rel_path,
        sha256=digest,
        data=data,
        value_spans=builder.value_spans,
        key_spans=builder.key_spans,
        styles=builder.styles,
        _text=text,
    )
    return loaded, builder.diagnostics


def declared_kind(raw: bytes) -> str | None:
    """The `kind` a manifest that could not be loaded declares, as far as YAML reads it before
    its error: the scalar value of a top-level `kind` key of its first document, else None.
    (Only the parser's events are read, up to that value: nothing is built.)"""
    try:
        events = yaml.parse(raw.decode("utf-8"), Loader=_Loader)
        depth, key, is_key = 0, None, True  # the key read last, at the top level
        for event in events:
            if isinstance(event, yaml.NodeEvent) and depth == 1:  # a top-level key or value
                if not is_key and key == "kind":
                    return event.value if isinstance(event, yaml.ScalarEvent) else None
                key = event.value if is_key and isinstance(event, yaml.ScalarEvent) else None
                is_key = not is_key
            if isinstance(event, yaml.CollectionStartEvent):
                if depth == 0 and not isinstance(event, yaml.MappingStartEvent):
                    return None
                depth += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                if depth == 0:
                    return None
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        pass
    return None


def load_files(
    root: Path, files: Sequence[Path], overlay: Mapping[Path, bytes] | None = None
) -> tuple[list[Loaded], list[Diagnostic], list[str | None]]:
    """The files' documents and diagnostics, and for each file that could not be loaded the
    kind it declares (`declared_kind`; None when that cannot be read either). A file in
    `overlay` is read from there, as if it held those bytes."""
    docs: list[Loaded] = []
    diags: list[Diagnostic] = []
    unloaded: list[str | None] = []
    for path in files:
        rel = display_path(path, root)
        if bad := UNSAFE_IN_NAMES.search(rel):
            # The name is written into every generated header and diagnostic: a newline in it
            # could forge a line of either. Refused here; both escape it anyway (`printable`).
            diags.append(
                error(
                    "GEN001",
                    Span(file=rel),
                    f"the file's path holds a control character ({printable(bad.group())})",
                    "rename the file: manifest paths may not hold control characters, line "
                    "separators or bytes that are not UTF-8",
                )
            )
            unloaded.append(None)
            continue
        try:
            raw = overlay[path] if overlay and path in overlay else path.read_bytes()
        except OSError as exc:
            diags.append(error("GEN001", Span(file=rel), f"cannot read file: {exc.strerror}"))
            unloaded.append(None)
            continue
        doc, problems = load_text(rel, raw)
        diags.extend(problems)
        if doc is not None:
            docs.append(doc)
        else:
            unloaded.append(declared_kind(raw))
    return docs, diags, unloaded


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_TOO_DEEP = f"YAML nesting deeper than {MAX_NESTING} levels"
_TAB = "YAML syntax error: a tab character here; YAML indentation uses spaces, not tabs"
_RECURSIVE = "a YAML alias inside this anchored node refers to the node itself (it would never end)"
_ALIASED_VALUES = (
    f"YAML aliases add more than {MAX_ALIASED_VALUES:,} values to the document (an alias bomb?)"
)
# Most often a script wrote the file: PyYAML's dump anchors every object it meets twice.
_ALIASED_HINT = (
    "declare a schema many tools share under `types:` and refer to it as #/types/Name; a "
    "script that writes manifests with PyYAML can write copies instead of aliases (a Dumper "
    "whose ignore_aliases returns True)"
)
_SELF_MERGE = "this merge key (<<) merges the mapping that holds it (it would never end)"


def _short(text: str, limit: int = 40) -> str:
    return repr(shortened(text, limit))


def _colon_in_plain_text(line: str, col: int) -> str | None:
    """The hint for YAML's "mapping values are not allowed" at `col` of `line` when its cause
    is a `: ` inside an unquoted value (`description: Get one page: by its id`): the line has a
    `key: ` before the error, and the value after it is plain text. None otherwise (a key
    indented under a scalar gives the same error: quoting is not its fix)."""
    key, colon, value = line[: col - 1].partition(": ")
    value = (value + line[col - 1 :]).strip()
    if not colon or not key.strip() or not value or value[0] in "\"'[]{}|>&*!%@`#":
        return None
    value = value.split(" #", 1)[0].rstrip()  # a comment ends plain text
    example = f"{key.strip()}: {json.dumps(value, ensure_ascii=False)}"
    quoted = f" ({example})" if len(example) <= 80 else ""
    return f"quote the value{quoted}; unquoted, a ': ' inside it starts a mapping"


_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _nested_too_deep(text: str) -> yaml.Mark | None:
    """Where (the YAML mark) collections nest deeper than MAX_NESTING, if they do. libyaml's
    composer recurses in C: tens of thousands of `[` crash the process before Python's
    recursion limit can stop it. Only flow collections (`[`, `{`) nest that deep in a file of
    sane size, so the event scan (which does not recurse) runs only when the brackets could."""
    depth = deepest = 0
    for c in _NOT_BRACKETS.sub("", text):
        depth = depth + 1 if c in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    if deepest <= MAX_NESTING:
        return None
    depth = -1  # the document's root is level 0, as the builder counts
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    return event.start_mark
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # composing reports it, with its place
    return None


# What YAML 1.1 (PyYAML, libyaml) counts as a line break in its marks, and what editors and
# users count: NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR break a line for YAML only (YAML 1.2
# dropped them too), so past one of them a mark's line is not the line an editor shows.
_YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_LINE_BREAKS = re.compile("\r\n|[\r\n]")


class Positions:
    """YAML marks (and reader offsets) of one text -> 1-based (line, column) as an editor shows
    them: lines end at LF, CR LF or CR; a column counts characters (code points) from the line's
    start, after a byte-order mark on the first line, as libyaml counts them."""

    def __init__(self, text: str) -> None:
        self._bom = text.startswith("\ufeff")
        self._text = text[1:] if self._bom else text
        # Without NEL, LS or PS, a mark's line and column already are the editor's.
        self._exact = not any(c in self._text for c in "\x85\u2028\u2029")
        self._yaml_starts: list[int] | None = None
        self._starts: list[int] | None = None

    def of_mark(self, mark: yaml.Mark) -> tuple[int, int]:
        if self._exact:
            return mark.line + 1, mark.column + 1
        if self._yaml_starts is None:
            self._yaml_starts = [0, *(m.end() for m in _YAML_BREAKS.finditer(self._text))]
        starts = self._yaml_starts
        return self._of_offset(starts[min(mark.line, len(starts) - 1)] + mark.column)

    def span(self, file: str, mark: yaml.Mark) -> Span:
        line, col = self.of_mark(mark)
        return Span(file=file, line=line, col=col)

    def of_reader_offset(self, offset: int) -> tuple[int, int]:
        """Of a reader error's position: libyaml's is an offset in the UTF-8 bytes it reads
        (the byte-order mark included), the pure-Python reader's one in characters."""
        text = "\ufeff" + self._text if self._bom else self._text
        if _LIBYAML:
            offset = len(text.encode("utf-8")[:offset].decode("utf-8", "ignore"))
        return self._of_offset(max(offset - int(self._bom), 0))

    def char_at(self, line: int, col: int) -> str:
        """The character at an editor's 1-based (line, column), or "" past the text."""
        starts = self._line_starts()
        if not 0 < line <= len(starts) or col < 1:
            return ""
        offset = starts[line - 1] + col - 1
        return self._text[offset : offset + 1]

    def line(self, line: int) -> str:
        """The text of an editor's 1-based line, without its line break ("" past the text)."""
        starts = self._line_starts()
        if not 0 < line <= len(starts):
            return ""
        end = starts[line] if line < len(starts) else len(self._text)
        return self._text[starts[line - 1] : end].rstrip("\r\n")

    def _line_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0, *(m.end() for m in _LINE_BREAKS.finditer(self._text))]
        return self._starts

    def _of_offset(self, offset: int) -> tuple[int, int]:
        starts = self._line_starts()
        i = bisect_right(starts, offset) - 1
        return i + 1, offset - starts[i] + 1


class _Builder:
    """Nodes -> JSON data, recording the position of every value and key up to `depth` parts
    (every one when depth is None)."""

    def __init__(
        self, file: str, depth: int | None = SPAN_DEPTH, positions: Positions | None = None
    ) -> None:
        self.file = file
        self.positions = positions
        self.depth = depth
        self.value_spans: dict[JsonPath, Span] = {}
        self.key_spans: dict[JsonPath, Span] = {}
        self.styles: dict[JsonPath, str] = {}
        self.diagnostics: list[Diagnostic] = []
        self._constructor = yaml.SafeLoader("")  # only its scalar constructors are used
        self._values = 0
        # ids of the nodes built once; a node built again is an alias's copy, and so is all of it
        self._built: set[int] = set()
        self._aliasing = False
        self._aliased_values = 0
        self._aliased_chars = 0
        # id of a mapping node -> ids of its own (not merged) key nodes, taken before _flatten
        # inlines merged pairs in place (an aliased node is seen again); None: it merges nothing
        self._own_keys: dict[int, frozenset[int] | None] = {}
        self._tags_reported: set[int] = set()
        # ids of the collections being built: met again inside itself, one is recursive
        self._open: set[int] = set()

    def _enter(self, node: yaml.Node) -> None:
        if id(node) in self._open:
            raise _TooBig(node, _RECURSIVE)
        self._open.add(id(node))

    def _count(self, node: yaml.Node, depth: int) -> None:
        if node.tag not in _PLAIN_TAGS:
            self._unsupported_tag(node)
        self._values += 1
        if self._values > MAX_VALUES:
            raise _TooBig(
                node, f"document expands to more than {MAX_VALUES:,} values (YAML aliases?)"
            )
        if depth > MAX_NESTING:
            raise _TooBig(node, _TOO_DEEP)
        if not self._aliasing:
            self._built.add(id(node))
            return
        self._aliased_values += 1
        if self._aliased_values > MAX_ALIASED_VALUES:
            raise _TooBig(node, _ALIASED_VALUES, _ALIASED_HINT)
        if isinstance(node, yaml.ScalarNode):
            self._aliased_text(node, node.value)

    def _aliased_text(self, node: yaml.Node, text: str) -> None:
        """Count a string or key that an alias copies."""
        self._aliased_chars += len(text)
        if self._aliased_chars > MAX_ALIASED_CHARS:
            raise _TooBig(
                node,
                f"YAML aliases add more than {MAX_ALIASED_CHARS:,} characters to the document "
                "(an alias bomb?)",
                _ALIASED_HINT,
            )

    def _alias_copy(self, build: Callable[[yaml.Node, Any], Any], node: yaml.Node, arg: Any) -> Any:
        """`build(node, arg)` for a node built before: an alias's copy, all of which counts
        toward what aliases add."""
        self._aliasing = True
        try:
            return build(node, arg)
        finally:
            self._aliasing = False

    def _unsupported_tag(self, node: yaml.Node) -> None:
        if id(node) in self._tags_reported:  # an alias of a node already reported
            return
        self._tags_reported.add(id(node))
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.diagnostics.append(
            error(
                "GEN002",
                self._span(node),
                f"unsupported YAML tag {_short(tag)}: manifests are plain YAML (no tags)",
            )
        )

    def _pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's (key, value, own) pairs with YAML merge keys (`<<`) applied: merged
        pairs first, then the mapping's own, which override merged ones."""
        if id(node) not in self._own_keys:
            merges = False
            for k, _v in node.value:
                if k.tag == _MERGE_TAG and isinstance(k, yaml.ScalarNode):
                    merges = True
                elif k.tag == _VALUE_TAG:  # a `=` key is text (flatten_mapping's rule)
                    k.tag = _STR_TAG
            if merges:
                self._flatten(node)
            else:  # most mappings: no set of key ids to make or look up
                self._own_keys[id(node)] = None
        own = self._own_keys[id(node)]
        if own is None:
            return [(k, v, True) for k, v in node.value]
        return [(k, v, id(k) in own) for k, v in node.value]

    def _flatten(self, node: yaml.MappingNode) -> None:
        """Apply the merge keys of `node` in place, and first those of every mapping it merges
        that is not flattened yet, however nested (`<<: {<<: *a}`), as PyYAML's flatten_mapping
        would: merged pairs first (a list's last mapping first), then the mapping's own. Unlike
        flatten_mapping, which recursed into a merged mapping before anyone had seen it, each
        one's own keys are recorded, a merge of a mapping being built or flattened is refused
        at its key, and the pairs all of it copies are counted against the bound before one is
        copied. A stack instead of recursion: a chain of merges may be as long as the file."""
        plans = {id(node): self._merge_plan(node)}
        walking = {id(node)}
        order: list[yaml.MappingNode] = []  # merged mappings before the mappings merging them
        stack = [(node, iter(plans[id(node)][1]))]
        while stack:
            mapping, pending = stack[-1]
            for key, merged in pending:
                # the node itself is open (being built), as are the collections holding it
                if id(merged) in self._open or id(merged) in walking:
                    raise _TooBig(key, _SELF_MERGE)
                if id(merged) not in plans and id(merged) not in self._own_keys:
                    plans[id(merged)] = self._merge_plan(merged)
                    walking.add(id(merged))
                    stack.append((merged, iter(plans[id(merged)][1])))
                    break
            else:
                stack.pop()
                walking.discard(id(mapping))
                order.append(mapping)
        sizes: dict[int, int] = {}  # pairs once flattened (merges of merges multiply)
        for mapping in order:
            own, merges = plans[id(mapping)]
            sizes[id(mapping)] = len(own) + sum(
                sizes[id(m)] if id(m) in sizes else len(m.value) for _k, m in merges
            )
        if self._aliased_values + sizes[id(node)] - len(plans[id(node)][0]) > MAX_ALIASED_VALUES:
            raise _TooBig(node, _ALIASED_VALUES, _ALIASED_HINT)
        for mapping in order:
            own, merges = plans[id(mapping)]
            mapping.value = [pair for _k, m in merges for pair in m.value] + own
            self._own_keys[id(mapping)] = frozenset(id(k) for k, _v in own) if merges else None

    def _merge_plan(
        self, node: yaml.MappingNode
    ) -> tuple[list[tuple[yaml.Node, yaml.Node]], list[tuple[yaml.Node, yaml.MappingNode]]]:
        """The mapping's own pairs, and each mapping it merges with its merge key, in the order
        their pairs are copied. A merge of anything but a mapping or a list of mappings is
        GEN002 at it, and the mapping keeps only its own pairs."""
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merges: list[tuple[yaml.Node, yaml.MappingNode]] = []
        bad: yaml.Mark | None = None
        for k, v in node.value:
            if not (isinstance(k, yaml.ScalarNode) and k.tag == _MERGE_TAG):
                if k.tag == _VALUE_TAG:  # a `=` key is text (flatten_mapping's rule)
                    k.tag = _STR_TAG
                own.append((k, v))
                continue
            items = v.value if isinstance(v, yaml.SequenceNode) else [v]
            for item in items:
                if not isinstance(item, yaml.MappingNode) and bad is None:
                    bad = item.start_mark
            merges.extend((k, m) for m in reversed(items) if isinstance(m, yaml.MappingNode))
        if bad is not None:
            self.diagnostics.append(
                error(
                    "GEN002",
                    self._at(bad),
                    "YAML merge key (<<) must name a mapping or a list of mappings",
                )
            )
            merges = []
        return own, merges

    def _span(self, node: yaml.Node) -> Span:
        return self._at(node.start_mark)

    def _at(self, mark: yaml.Mark) -> Span:
        if self.positions is None:
            return Span(file=self.file, line=mark.line + 1, col=mark.column + 1)
        return self.positions.span(self.file, mark)

    def _key(self, key_node: yaml.Node) -> str | None:
        """The mapping key as a string (None, with a diagnostic, when it is not a plain scalar)."""
        if key_node.tag not in _PLAIN_TAGS:
            self._unsupported_tag(key_node)
        key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str | int | float | bool) or key is None:
            self.diagnostics.append(
                error("GEN004", self._span(key_node), "mapping keys must be plain scalars")
            )
            return None
        return str(key).lower() if isinstance(key, bool) else str(key)

    def _entries(
        self, node: yaml.MappingNode, *, fast: bool
    ) -> list[tuple[yaml.Node, yaml.Node, bool, str]]:
        """The mapping's (key node, value node, own, key) for each pair with a usable key, in
        the order the keys come out (`fast`: a plain string key is taken as it is, without the
        checks of `_key`, which give it the same text). With merge keys, as PyYAML reads them:
        a later pair overrides an earlier one in that one's place, and merged pairs come first,
        a merge list's last mapping first, so a mapping's own key overrides a merged one, an
        earlier mapping of the list a later one, and a merged mapping's own key what it merged
        itself. Only the pairs that set a value are built (an own key given twice stays, for
        `_takes` to report)."""
        entries: list[tuple[yaml.Node, yaml.Node, bool, str]] = []
        for k, v, own in self._pairs(node):
            if fast and isinstance(k, yaml.ScalarNode) and k.tag == _STR_TAG:
                key: str | None = k.value
            else:
                key = self._key(k)
            if key is not None:
                entries.append((k, v, own, key))
        if self._own_keys.get(id(node)) is None:  # no merge keys: every pair in its place
            return entries
        first: dict[str, int] = {}
        winner: dict[str, int] = {}
        again: list[int] = []  # own keys given a second time
        for i, (_k, _v, own, key) in enumerate(entries):
            first.setdefault(key, i)
            if own and key in winner and entries[winner[key]][2]:
                again.append(i)
            else:
                winner[key] = i
        places = sorted([(first[key], i) for key, i in winner.items()] + [(i, i) for i in again])
        return [entries[i] for _place, i in places]

    def _takes(
        self,
        node: yaml.MappingNode,
        key_node: yaml.Node,
        key: str,
        own: bool,
        out: dict[str, Any],
        own_keys: set[str],
        child: JsonPath,
    ) -> bool:
        """Whether a pair sets `out[key]`: a mapping's own key overrides a merged one, a merged
        pair never overrides an earlier one, and an own key given twice is a duplicate."""
        if key in out and (key in own_keys or not own):
            if own:
                self._duplicate(key_node, key, self._first_key(node, key, child))
            return False
        if own:
            own_keys.add(key)
        return True

    def _duplicate(self, key_node: yaml.Node, key: str, first: Span) -> None:
        self.diagnostics.append(
            error(
                "GEN003",
                self._span(key_node),
                f"duplicate key {key!r} (first defined at line {first.line})",
            )
        )

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        if not self._aliasing and id(node) in self._built:
            return self._alias_copy(self.build, node, path)
        if self.depth is not None and len(path) > self.depth:
            return self._plain(node, len(path))
        self._count(node, len(path))
        self.value_spans[path] = self._span(node)
        if isinstance(node, yaml.MappingNode):
            self._enter(node)
            out: dict[str, Any] = {}
            own_keys: set[str] = set()
            for key_node, value_node, own, key in self._entries(node, fast=False):
                child = (*path, key)
                if not self._takes(node, key_node, key, own, out, own_keys, child):
                    continue
                if self._aliasing or not own:  # a merged pair is an alias's copy too
                    self._aliased_text(key_node, key)
                if self.depth is None or len(child) <= self.depth:
                    self.key_spans[child] = self._span(key_node)
                out[key] = self.build(value_node, child)
            self._open.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            self._enter(node)
            items = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            self._open.discard(id(node))
            return items
        if node.style:
            self.styles[path] = node.style
        return self._scalar(node)

    def _first_key(self, node: yaml.MappingNode, key: str, child: JsonPath) -> Span:
        if child in self.key_spans:
            return self.key_spans[child]
        own = self._own_keys.get(id(node))
        for key_node, _value in node.value:  # an untracked (deep) mapping: find it again
            if own is not None and id(key_node) not in own:
                continue
            if isinstance(key_node, yaml.ScalarNode):
                k = self._scalar(key_node)
                if (
                    isinstance(k, str | int | float | bool)
                    and (str(k).lower() if isinstance(k, bool) else str(k)) == key
                ):
                    return self._span(key_node)
        raise AssertionError("a duplicate key has a first occurrence")  # pragma: no cover

    def _plain(self, node: yaml.Node, depth: int) -> Any:
        """`build` without source maps (same data, same diagnostics)."""
        if not self._aliasing and id(node) in self._built:
            return self._alias_copy(self._plain, node, depth)
        self._count(node, depth)
        if isinstance(node, yaml.ScalarNode):
            return node.value if node.tag == _STR_TAG else self._scalar(node)
        self._enter(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            own_keys: set[str] = set()
            for key_node, value_node, own, key in self._entries(node, fast=True):
                if not self._takes(node, key_node, key, own, out, own_keys, ()):
                    continue
                if self._aliasing or not own:  # a merged pair is an alias's copy too
                    self._aliased_text(key_node, key)
                out[key] = self._plain(value_node, depth + 1)
            self._open.discard(id(node))
            return out
        items = [self._plain(item, depth + 1) for item in node.value]
        self._open.discard(id(node))
        return items

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _JSON_SCALAR_TAGS:
            return str(node.value)
        value: Any
        try:
            if node.tag == _INT_TAG:
                value = _core_int(node.value)
            elif node.tag == _FLOAT_TAG:
                value = _core_float(node.value)
            else:  # null, bool
                value = self._constructor.construct_object(node, deep=True)
        except OverflowError:
            return self._too_large(node)
        except (KeyError, ValueError, yaml.YAMLError):
            return self._invalid_scalar(node)
        if value is None and node.tag in {_INT_TAG, _FLOAT_TAG}:  # `!!int 1_000`, `!!float 1:30`
            return self._invalid_scalar(node)
        if isinstance(value, float) and not math.isfinite(value):
            # .inf, .nan and 1e400: JSON has no such numbers, and no schema, tools.json
            # or generated module could carry them.
            self.diagnostics.append(
                error(
                    "GEN002",
                    self._span(node),
                    f"{_short(node.value)} is not a finite number, which JSON cannot hold",
                    "write a finite number, or quote it to mean the text",
                )
            )
            return node.value
        if type(value) is int and value.bit_length() > MAX_INTEGER_BITS:
            return self._too_large(node)
        return value

    def _invalid_scalar(self, node: yaml.ScalarNode) -> str:
        what = node.tag.rsplit(":", 1)[-1]
        message = f"{_short(node.value)} is not a valid YAML {what}"
        self.diagnostics.append(error("GEN002", self._span(node), message))
        return str(node.value)

    def _too_large(self, node: yaml.ScalarNode) -> str:
        # Beyond any JSON number a tool or client reads (and past 4,300 digits Python will not
        # even print it).
        self.diagnostics.append(
            error(
                "GEN002",
                self._span(node),
                f"{_short(node.value)} is too large a number (more than {MAX_INTEGER_BITS} bits)",
                "write a smaller number, or quote it to mean the text",
            )
        )
        return str(node.value)

"""`gen new connector`: a starting connector manifest that compiles as it is.

The project is compiled with the new file added in memory, and the file is written only if
that adds no error (a connector name that is taken, for instance, is reported and nothing is
written), so a scaffold never leaves the manifests broken, even when interrupted: the file
appears whole, or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import api
from .diagnostics import Diagnostic, Severity
from .render import render
from .runtime.templating import PLACEHOLDER
from .validate import SCHEMA_PATH, manifest_schema

AuthType = Literal["none", "bearer", "api_key", "basic", "oauth2"]
AUTH_TYPES: tuple[AuthType, ...] = ("bearer", "api_key", "basic", "oauth2", "none")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

_AUTH: dict[str, tuple[str, ...]] = {
    "none": ("type: none",),
    "bearer": (
        "type: bearer",
        "token_field: token",
        "fields:",
        "  - {name: token, title: API token}",
    ),
    "api_key": (
        "type: api_key",
        "header: X-API-Key                     # the header the API reads the key from",
        "key_field: api_key",
        "fields:",
        "  - {name: api_key, title: API key}",
    ),
    "basic": (
        "type: basic",
        "username_field: username",
        "password_field: password",
        "fields:",
        "  - {name: username, title: Username, secret: false}",
        "  - {name: password, title: Password}",
    ),
    "oauth2": (
        "type: oauth2",
        "token_field: access_token",
        "refresh_token_field: refresh_token",
        "client_id_field: client_id",
        "client_secret_field: client_secret",
        "# token_url: https://...              # to refresh expired access tokens",
        "fields:",
        "  - {name: access_token, title: Access token}",
        "  - {name: refresh_token, title: Refresh token, required: false}",
        "  - {name: client_id, title: OAuth client id, secret: false, required: false}",
        "  - {name: client_secret, title: OAuth client secret, required: false}",
    ),
}


class ScaffoldError(Exception):
    """A request that cannot be scaffolded as written (a bad name, base URL or GraphQL path):
    a usage error."""


class ScaffoldRefused(Exception):
    """A well-formed request the project refuses (the file exists, no manifest directory):
    an ordinary error, as a diagnostic of `gen validate` or `gen build` is."""


@dataclass(frozen=True, slots=True)
class Scaffolded:
    path: str | None  # the file written, relative to the project root; None: nothing written
    diagnostics: tuple[Diagnostic, ...]  # what the new file caused (then path is None)


def auth_lines(auth: AuthType, base_url: str) -> tuple[str, ...]:
    """The auth block, with a non-secret field for each `{placeholder}` of the base URL (the
    part of the host that differs per tenant, such as a shop or site name)."""
    lines = list(_AUTH[auth])
    names = dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(base_url))
    if names and "fields:" not in lines:
        lines.append("fields:")
    for field_name in names:
        title = field_name.replace("_", " ").capitalize()
        lines.append(f"  - {{name: {field_name}, title: {title}, secret: false}}  # in base_url")
    return tuple(lines)


def schema_reference(target: Path, root: Path) -> str:
    """What a new manifest's `$schema` comment names: the project's own copy of the schema
    when the project holds one (this repository's layout), else the schema's `$id`, never a
    path into this machine's install, which the file would carry into version control."""
    if SCHEMA_PATH.resolve().is_relative_to(root.resolve()):
        return os.path.relpath(SCHEMA_PATH, target.parent).replace(os.sep, "/")
    return str(manifest_schema()["$id"])


def connector_text(
    name: str,
    title: str,
    base_url: str,
    auth: AuthType,
    target: Path,
    graphql: str | None = None,
    *,
    root: Path,
) -> str:
    """The manifest text; with `graphql` (the endpoint's path), its example capability is a
    GraphQL query there instead of a REST call."""
    schema = schema_reference(target, root)
    return render(
        "new_connector.yaml.j2",
        name=name,
        title=title,
        base_url=base_url,
        graphql=graphql,
        auth=auth_lines(auth, base_url),
        schema_path=schema,
        q=lambda text: json.dumps(text, ensure_ascii=False),
    )


def new_connector(
    options: api.Options,
    name: str,
    *,
    title: str | None,
    base_url: str,
    auth: AuthType,
    graphql: str | None = None,
) -> Scaffolded:
    if not NAME.match(name):
        raise ScaffoldError(
            f"connector name {name!r}: lower-case snake_case, a letter first, at most 48 characters"
        )
    if not re.match(r"^https?://[^\s/]+", base_url):
        raise ScaffoldError(
            f"--base-url {base_url!r}: an http(s) URL, e.g. https://api.example.com"
        )
    if graphql is not None and not re.match(r"^/[^\s{}]*$", graphql):
        raise ScaffoldError(
            f"--graphql {graphql!r}: the GraphQL endpoint's path under the base URL, e.g. /graphql"
        )
    if not options.manifests.is_dir():
        raise ScaffoldRefused(api.no_manifests(options).message)
    target = options.manifests / "connectors" / f"{name}.yaml"
    shown = api.relative(options.root, target)
    if os.path.lexists(target):  # a link to nowhere too: writing would follow it
        raise ScaffoldRefused(f"{shown} exists; edit it instead")
    if os.path.lexists(target.parent) and not target.parent.is_dir():
        where = api.relative(options.root, target.parent)
        raise ScaffoldRefused(f"{where} is not a directory: cannot write {shown}")
    shown_title = title or name.replace("_", " ").title()
    text = connector_text(
        name, shown_title, base_url.rstrip("/"), auth, target, graphql, root=options.root
    )
    data = text.encode("utf-8")
    before = _problems(options)
    added = tuple(d for d in _diagnostics(options, {target: data}) if _key(d) not in before)
    if any(d.severity is Severity.ERROR for d in added):
        return Scaffolded(None, added)
    try:
        _create(target, data)
    except FileExistsError as exc:  # made meanwhile
        raise ScaffoldRefused(f"{shown} exists; edit it instead") from exc
    except OSError as exc:
        raise ScaffoldRefused(f"cannot write {shown}: {exc.strerror or exc}") from exc
    return Scaffolded(shown, ())


def _create(target: Path, data: bytes) -> None:
    """Write `target`, which does not exist, all at once: `data` goes to a hidden file beside
    it (discovery skips it), flushed to disk, which is then linked to the name. os.link fails
    rather than replace a file made meanwhile; a file system without hard links gets a rename.
    An interruption leaves either no file under the name or the whole of it."""
    made_dir = not target.parent.exists()
    target.parent.mkdir(exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, target)
        except FileExistsError:
            raise
        except OSError:
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "File exists", str(target)) from None
            os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if made_dir:
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        raise
    with contextlib.suppress(OSError):  # linked: the name holds the file
        temp.unlink(missing_ok=True)


def _diagnostics(
    options: api.Options, overlay: dict[Path, bytes] | None = None
) -> tuple[Diagnostic, ...]:
    return api.compile_manifests(options, overlay=overlay).diagnostics


def _key(d: Diagnostic) -> tuple[str, str, str]:
    return (d.code, str(d.span.file), d.message)


def _problems(options: api.Options) -> set[tuple[str, str, str]]:
    if not options.manifests.is_dir():
        return set()
    return {_key(d) for d in _diagnostics(options)}

"""`gen`: the command line. Translates flags into options, calls the api, renders diagnostics,
maps outcomes to exit codes: 0 ok, 1 diagnostics or drift, 2 usage."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .diagnostics import (
    Diagnostic,
    ErrorFormat,
    Severity,
    Span,
    has_errors,
    render,
    summary,
    workspace_prefix,
)

if TYPE_CHECKING:
    from . import api

# `api` (jsonschema, yaml, jinja2, ...) is imported by each command when it runs: `build` first
# takes over (or starts) its models workers, which import datamodel-code-generator meanwhile.

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

_project = click.option(
    "--project",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project root; diagnostics are relative to it (GitHub annotations: to "
    "$GITHUB_WORKSPACE, else the working directory).",
)
_manifests = click.option(
    "--manifests",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Manifest directory [default: <project>/manifests].",
)
_error_format = click.option(
    "--error-format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="How to print diagnostics.",
)


def _echo(message: str, *, nl: bool = True, err: bool = False) -> None:
    """click.echo, except that a stream that cannot be written (a full disk, `> /dev/full`, a
    terminal gone) ends the command with one line on stderr and exit 1, not a traceback. A pipe
    closed by its reader (`gen ir | head -1`) is click's to end: quietly, exit 1."""
    try:
        click.echo(message, nl=nl, err=err)
    except BrokenPipeError:
        raise
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError):  # stderr may be what failed
            sys.stderr.write(
                f"error: cannot write to {'stderr' if err else 'stdout'}: {exc.strerror or exc}\n"
            )
            sys.stderr.flush()
        sys.exit(EXIT_FAIL)


def _options(
    root: Path,
    manifests: Path | None,
    out: Path | None = None,
    cache: bool = True,
    jobs: int | None = None,
) -> api.Options:
    from . import api

    return api.Options.for_project(root, manifests=manifests, out=out, cache=cache, jobs=jobs)


def _report(diagnostics: Any, fmt: ErrorFormat, root: Path) -> None:
    if fmt == "json":
        _echo(render(diagnostics, "json"), nl=False)
        return
    if diagnostics:
        # A GitHub annotation names a file from the repository's root, not the project's.
        workspace = workspace_prefix(root, os.environ) if fmt == "github" else ""
        _echo(render(diagnostics, fmt, workspace=workspace), nl=False, err=True)
        if fmt == "text":
            _echo(summary(diagnostics), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcpforge", prog_name="gen")
def main() -> None:
    """mcpforge: compile MCP tool manifests into a multi-tenant gateway package."""


@main.command()
@_project
@_manifests
@_error_format
def validate(root: Path, manifests: Path | None, error_format: ErrorFormat) -> None:
    """Check the manifests; write nothing."""
    from . import api

    result = api.compile_manifests(_options(root, manifests))
    _report(result.diagnostics, error_format, root)
    if not result.ok:
        sys.exit(EXIT_FAIL)
    if error_format == "text":
        assert result.project is not None
        _echo(
            f"ok: {len(result.project.tools)} tools, {len(result.project.connectors)} connectors",
            err=True,
        )


@main.command()
@_project
@_manifests
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [default: <project>/generated].",
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare with the output directory; write nothing; "
    "exit 1 with a diff when it is out of date.",
)
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill .mcpforge-cache/.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes generating models [default: one per core, at most 8].",
)
@_error_format
def build(
    root: Path,
    manifests: Path | None,
    out: Path | None,
    check: bool,
    no_cache: bool,
    jobs: int | None,
    error_format: ErrorFormat,
) -> None:
    """Compile the manifests into the generated package."""
    started = time.perf_counter()
    from .models_worker import ModelsWorkers

    workers = ModelsWorkers.start(jobs)
    from . import api

    options = _options(root, manifests, out, cache=not no_cache, jobs=jobs)
    result = api.build(options, check=check, workers=workers)
    p = result.plan
    out_name = api.relative(options.root, options.out)
    # With --check in the github and json formats, each out-of-date file is a diagnostic too
    # (an annotation, a JSON entry); the text format prints the diff instead.
    drift = _drift(p, out_name) if check and p is not None and error_format != "text" else []
    _report([*result.diagnostics, *drift], error_format, root)
    if has_errors(result.diagnostics) or drift:
        sys.exit(EXIT_FAIL)
    assert p is not None
    elapsed = time.perf_counter() - started
    if check:
        if not p.clean:
            _echo(result.diff, nl=False)
            _echo(
                f"{out_name}/ is out of date: {len(p.changed)} changed, {len(p.added)} "
                f"missing, {len(p.stale)} stale"
                + (f", {len(p.leftovers)} left by a killed build" if p.leftovers else "")
                + ". Run `gen build`.",
                err=True,
            )
            sys.exit(EXIT_FAIL)
        if error_format == "text":
            _echo(f"{out_name}/ is up to date ({len(p.unchanged)} files, {elapsed:.2f}s)", err=True)
        return
    if error_format == "text":
        if p.recovered:
            _echo(
                f"put back the output that a killed build had left half-written in {out_name}/",
                err=True,
            )
        _echo(
            f"wrote {out_name}/: {len(p.added)} added, {len(p.changed)} changed, "
            f"{len(p.stale)} removed, {len(p.unchanged)} unchanged ({elapsed:.2f}s)",
            err=True,
        )


def _drift(plan: Any, out_name: str) -> list[Diagnostic]:
    """`gen build --check`'s findings as diagnostics (GEN305), one per file."""
    rebuild = "run `gen build` and commit the result"
    found = [
        *(
            (
                rel,
                f"is not a readable file ({plan.unreadable[rel]}), where gen build writes one",
                "move it away or delete it, then " + rebuild,
            )
            if rel in plan.unreadable
            else (rel, "differs from what the manifests generate", rebuild)
            for rel in plan.changed
        ),
        *((rel, "is missing", rebuild) for rel in plan.added),
        *((rel, "is no longer generated by any manifest (stale)", rebuild) for rel in plan.stale),
        *(
            (rel, "is a staging or backup file a killed build left", rebuild)
            for rel in plan.leftovers
        ),
    ]
    return [
        Diagnostic(
            code="GEN305",
            severity=Severity.ERROR,
            span=Span(file=f"{out_name}/{rel}"),
            message=f"{out_name}/{rel} {what}",
            hint=hint,
        )
        for rel, what, hint in sorted(found)
    ]


@main.command(name="ir")
@_project
@_manifests
@click.option("--spans", is_flag=True, help="Include file:line:col of each node.")
@_error_format
def ir_command(root: Path, manifests: Path | None, spans: bool, error_format: ErrorFormat) -> None:
    """Print the compiled IR as sorted JSON."""
    from . import api

    data, diags = api.ir_data(_options(root, manifests), spans=spans)
    if data is None:
        _report(diags, error_format, root)
        sys.exit(EXIT_FAIL)
    _echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


# ---------------------------------------------------------------------------- quality gates

_today = click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Date for sunset checks, YYYY-MM-DD [default: today].",
)


@main.command(name="breaking")
@_project
@_manifests
@click.option(
    "--against",
    required=True,
    metavar="REF",
    help="A git ref (main, HEAD~1, v1.2.0), a directory of manifests, or a project root "
    "(a directory holding manifests/) to compare with.",
)
@_today
@_error_format
def breaking_command(
    root: Path, manifests: Path | None, against: str, today: Any, error_format: ErrorFormat
) -> None:
    """Report changes that break agents using the tools (exit 1 unless allowed)."""
    from . import breaking

    try:
        result = breaking.breaking(
            _options(root, manifests), against, today=today.date() if today else None
        )
    except breaking.BreakingError as exc:
        raise click.UsageError(str(exc)) from exc
    workspace = workspace_prefix(root, os.environ) if error_format == "github" else ""
    _echo(breaking.render(result, error_format, workspace), nl=False)
    if error_format == "text":
        _echo(breaking.summary(result), err=True)
    if not result.ok:
        sys.exit(EXIT_FAIL)


def _profiles_option() -> Any:
    from .profiles import known_names

    return click.option(
        "--profile",
        "profiles",
        multiple=True,
        type=click.Choice(known_names()),
        help="Client profile to check (repeatable) [default: the gateway's lint.profiles].",
    )


@main.command(name="lint")
@_project
@_manifests
@_profiles_option()
@click.option(
    "--token-budget",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens one tenant's tools/list may take [default: lint.token_budget].",
)
@_today
@_error_format
def lint_command(
    root: Path,
    manifests: Path | None,
    profiles: tuple[str, ...],
    token_budget: int | None,
    today: Any,
    error_format: ErrorFormat,
) -> None:
    """Check the catalog against client profiles and each tenant's token budget."""
    from . import lint, tokens

    result = lint.lint(
        _options(root, manifests),
        profiles=profiles or None,
        token_budget=token_budget,
        today=today.date() if today else None,
    )
    if error_format == "json":
        _echo(
            json.dumps(
                {
                    "profiles": [p.name for p in result.profiles],
                    "diagnostics": [d.as_dict() for d in result.diagnostics],
                    "suppressed": [
                        {**s.diagnostic.as_dict(), "reason": s.reason} for s in result.suppressed
                    ],
                    "tokens": tokens.as_data(result.tokens),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        if result.tokens:
            _echo(tokens.render_report(result.tokens), nl=False)
        _report(result.diagnostics, error_format, root)
        if error_format == "text" and result.profiles:
            _echo(
                f"lint: profiles {', '.join(p.name for p in result.profiles)}; "
                f"{len(result.suppressed)} finding(s) disabled in manifests",
                err=True,
            )
    if not result.ok:
        sys.exit(EXIT_FAIL)


@main.command(name="tokens")
@_project
@_manifests
@_profiles_option()
@click.option(
    "--token-budget",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens one tenant's tools/list may take [default: lint.token_budget].",
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Savings to suggest per tenant.",
)
@_error_format
def tokens_command(
    root: Path,
    manifests: Path | None,
    profiles: tuple[str, ...],
    token_budget: int | None,
    top: int,
    error_format: ErrorFormat,
) -> None:
    """Print each representative tenant's tools/list size in tokens (exit 1 over budget)."""
    from . import lint, tokens

    result = lint.lint(
        _options(root, manifests), profiles=profiles or None, token_budget=token_budget
    )
    if not result.tokens:  # the manifests do not compile
        _report(result.diagnostics, error_format, root)
        sys.exit(EXIT_FAIL)
    over = [d for d in result.diagnostics if d.code == "LNT020"]
    if error_format == "json":
        _echo(json.dumps(tokens.as_data(result.tokens), indent=2, ensure_ascii=False))
    else:
        _echo(tokens.render_report(result.tokens, top=top), nl=False)
        _report(over, error_format, root)
    if over:
        sys.exit(EXIT_FAIL)


if __name__ == "__main__":  # pragma: no cover
    main()


@main.group(name="new")
def new_group() -> None:
    """Start a new manifest from a template that compiles as it is."""


@new_group.command(name="connector")
@click.argument("name")
@click.option("--base-url", required=True, help="The API's base URL, e.g. https://api.acme.com/v2.")
@click.option("--title", default=None, help="Display name [default: from NAME].")
@click.option(
    "--auth",
    type=click.Choice(["bearer", "api_key", "basic", "oauth2", "none"]),
    default="bearer",
    show_default=True,
    help="How a tenant's credentials are sent.",
)
@click.option(
    "--graphql",
    "graphql",
    metavar="PATH",
    default=None,
    help="A GraphQL API: its endpoint's path under the base URL (e.g. /graphql); the example "
    "capability is then a GraphQL query.",
)
@_project
@_manifests
@_error_format
def new_connector_command(
    name: str,
    base_url: str,
    title: str | None,
    auth: str,
    graphql: str | None,
    root: Path,
    manifests: Path | None,
    error_format: ErrorFormat,
) -> None:
    """Write manifests/connectors/NAME.yaml: auth, base URL and one example capability.

    Nothing is written when the file exists or when the project would not compile with it
    (a connector NAME already declared elsewhere, for instance)."""
    from . import scaffold

    options = _options(root, manifests)
    try:
        made = scaffold.new_connector(
            options,
            name,
            title=title,
            base_url=base_url,
            auth=auth,  # type: ignore[arg-type]
            graphql=graphql,
        )
    except scaffold.ScaffoldError as exc:
        _echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except scaffold.ScaffoldRefused as exc:
        _echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAIL)
    if made.path is None:
        _report(made.diagnostics, error_format, root)
        _echo(
            f"nothing written: the project would not compile with connector {name} (the "
            "locations above are in the file it would have written)",
            err=True,
        )
        sys.exit(EXIT_FAIL)
    _echo(
        f"wrote {made.path}: connector {name} with the example tool {name}_list_items; "
        "replace it with the API's operations, then run gen build",
        err=True,
    )

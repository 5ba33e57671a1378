"""The `gen` command (also `python -m generator`).

A build spends its first half second importing datamodel-code-generator. For `gen build` the
models workers that pay for it on another core are started here, before anything else is
imported (the command-line parser alone takes about 50 ms); the build takes them over
(`ModelsWorkers.start`). A command that ends before it gets that far (bad options, `--help`)
kills them on exit.

The command ends without tearing the interpreter down: freeing the objects of a build one by
one (and the modules of datamodel-code-generator, jsonschema, jinja2...) takes tens of
milliseconds for nothing. Output is flushed and the workers stopped first.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # (typing itself is not imported before the first fork: ~10 ms)
if TYPE_CHECKING:
    from typing import NoReturn


def _jobs(args: list[str]) -> int | None:
    """The value of `--jobs` among a build's arguments (None if absent or not a number: the
    command line reports bad values itself)."""
    for i, arg in enumerate(args):
        value = None
        if arg == "--jobs" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--jobs="):
            value = arg.removeprefix("--jobs=")
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _exit(code: object) -> NoReturn:
    """`sys.exit(code)` without the interpreter's teardown."""
    from .models_worker import stop_all

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    stop_all()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            status = status or 1
    os._exit(status)


def main() -> None:
    code: object = 0
    try:
        args = sys.argv[1:]
        if args[:1] == ["build"] and not {"-h", "--help"} & set(args):
            from .models_worker import prestart

            prestart(_jobs(args))
        from .cli import main as cli

        cli()
    except SystemExit as done:  # how click ends every command
        code = done.code
    except KeyboardInterrupt:  # before click took over (it says the same)
        print("Aborted!", file=sys.stderr)
        code = 1
    except OSError as exc:
        # click's own writes (`--help`, usage) are not guarded as the commands' output is
        # (cli._echo): a full disk or a terminal gone is one line, not a traceback.
        import contextlib
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
            raise
        with contextlib.suppress(OSError):
            print(f"error: cannot write output: {exc.strerror}", file=sys.stderr)
        code = 1
    _exit(code)


if __name__ == "__main__":
    main()

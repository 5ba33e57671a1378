"""Format generated Python with the ruff pinned in pyproject.toml.

ruff runs with `--isolated` and explicit options, so no configuration file of the user's can
change the output. All files of a build are formatted in one ruff invocation (two processes:
import sorting, then formatting) in a scratch directory.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

RUFF_OPTIONS = ["--isolated", "--line-length", "100", "--target-version", "py311"]


class FormatError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def ruff_bin() -> str:
    try:
        from ruff.__main__ import find_ruff_bin

        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError):  # pragma: no cover - ruff is a dependency
        return "ruff"


def format_python(files: Mapping[str, str]) -> dict[str, str]:
    """Formatted text of each `.py` file (paths are relative, used only to name errors)."""
    if not files:
        return {}
    with tempfile.TemporaryDirectory(prefix="mcpforge-fmt-") as tmp:
        root = Path(tmp)
        names: dict[str, Path] = {}
        for i, (path, text) in enumerate(sorted(files.items())):
            target = root / f"f{i:06d}.py"
            target.write_text(text, encoding="utf-8", newline="\n")
            names[path] = target
        env = {**os.environ, "NO_COLOR": "1"}
        env.pop("RUFF_CACHE_DIR", None)
        cmds = [
            [
                ruff_bin(),
                "check",
                *RUFF_OPTIONS,
                "--no-cache",
                "--select",
                "I",
                "--fix",
                "--exit-zero",
                "--quiet",
                tmp,
            ],
            # Not --quiet: it also silences the parse error that says what went wrong.
            [ruff_bin(), "format", *RUFF_OPTIONS, "--no-cache", tmp],
        ]
        for cmd in cmds:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                detail = (proc.stderr.strip() or proc.stdout).strip()
                by_tmp = {str(v): k for k, v in names.items()}
                culprit = next((k for t, k in by_tmp.items() if t in detail), "generated code")
                for t, k in by_tmp.items():
                    detail = detail.replace(t, k)
                raise FormatError(culprit, detail.splitlines()[0] if detail else "ruff failed")
        return {path: target.read_text(encoding="utf-8") for path, target in names.items()}

"""Small helpers shared by the generator's tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from generator import api

ROOT = Path(__file__).resolve().parent.parent


def make_project(
    tmp_path: Path, manifests: dict[str, str] | None = None, copy_defaults: bool = False
) -> Path:
    """A scratch project: manifests from text (path -> YAML), optionally the defaults too."""
    root = tmp_path / "project"
    (root / "manifests").mkdir(parents=True)
    if copy_defaults:
        shutil.copytree(ROOT / "manifests", root / "manifests", dirs_exist_ok=True)
    for rel, text in (manifests or {}).items():
        path = root / "manifests" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def options(root: Path, **kw: object) -> api.Options:
    return api.Options.for_project(root, cache=False, **kw)  # type: ignore[arg-type]


def tree(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def mypy_strict(*targets: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict on `targets` (imports followed silently), run from `cwd`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            *map(str, targets),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )

"""Small helpers shared by the generator's tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from generator import api

ROOT = Path(__file__).resolve().parent.parent


# Root reads and writes every directory whatever its mode: a command run with this prefix drops
# those permission overrides, so that a test of a directory's mode means the same as root.
AS_A_USER = (
    [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    ]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)
MODES_HOLD = os.geteuid() != 0 or bool(AS_A_USER)


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


class PyrightDiagnostic(NamedTuple):
    file: Path  # absolute, resolved
    line: int  # 1-based
    rule: str  # e.g. reportArgumentType ("" for a syntax error)
    severity: str  # error, warning or information
    message: str


def pyright_strict(*targets: Path, site: Path, project: Path) -> list[PyrightDiagnostic]:
    """pyright in strict mode (basedpyright's CLI) on `targets`, as a Pylance user sees them:
    `site` is on the import path the way an installed package's directory is, so a py.typed
    package there is a library (only what its modules export may be imported from them).
    The configuration goes to `project`/pyrightconfig.json (its directory is pyright's root)."""
    (project / "pyrightconfig.json").write_text(
        json.dumps({"typeCheckingMode": "strict", "pythonVersion": "3.11"}), encoding="utf-8"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "basedpyright",
            "--outputjson",
            "--pythonpath",
            sys.executable,
            "--project",
            str(project / "pyrightconfig.json"),
            *map(str, targets),
        ],
        # pyright asks the interpreter for its import path, PYTHONPATH included.
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1: diagnostics; anything else: pyright did not run
        raise AssertionError(f"pyright failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    report = json.loads(proc.stdout)
    return [
        PyrightDiagnostic(
            file=Path(d["file"]).resolve(),
            line=d["range"]["start"]["line"] + 1,
            rule=d.get("rule", ""),
            severity=d["severity"],
            message=d["message"],
        )
        for d in report["generalDiagnostics"]
    ]

"""Golden cases: tests/cases/<name>/manifests in, expected/ tree or diagnostics.txt out.

Regenerate with `pytest tests/test_golden.py --update-golden` (refused when CI is set).
The runtime modules are verbatim copies tested where they live, so they are left out here.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from generator import api
from generator.diagnostics import has_errors, render
from generator.write import OWNED_LIST

CASES_DIR = Path(__file__).parent / "cases"
CASES = sorted(p for p in CASES_DIR.iterdir() if p.is_dir())


def golden_view(files: dict[str, str]) -> dict[str, str]:
    return {p: t for p, t in files.items() if "/runtime/" not in p and p != OWNED_LIST}


def _diff(expected: str, actual: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(True), actual.splitlines(True), f"expected/{name}", f"actual/{name}"
        )
    )


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, update_golden: bool, tmp_path: Path) -> None:
    options = api.Options.for_project(case, out=tmp_path / "out", cache=False)
    _result, files, diags = api.generate(options)
    expected_diags = case / "diagnostics.txt"
    expected_dir = case / "expected"
    if has_errors(diags) or expected_diags.exists():
        actual = render(diags)
        if update_golden:
            expected_diags.write_text(actual, encoding="utf-8")
        assert expected_diags.exists(), f"unexpected diagnostics:\n{actual}"
        expected = expected_diags.read_text(encoding="utf-8")
        assert actual == expected, _diff(expected, actual, "diagnostics.txt")
        return
    actual_files = golden_view(files)
    if update_golden:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in actual_files.items():
            target = expected_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
    assert expected_dir.is_dir(), f"no expected/ for {case.name}; run with --update-golden"
    expected_files = {
        p.relative_to(expected_dir).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(expected_dir.rglob("*"))
        if p.is_file()
    }
    problems = [
        f"missing from output: {p}" for p in sorted(set(expected_files) - set(actual_files))
    ]
    problems += [f"not expected: {p}" for p in sorted(set(actual_files) - set(expected_files))]
    for rel in sorted(set(expected_files) & set(actual_files)):
        if expected_files[rel] != actual_files[rel]:
            problems.append(_diff(expected_files[rel], actual_files[rel], rel))
    assert not problems, "\n".join(problems)

"""The generated distribution, built and installed like a user would.

`generated/` is copied out of the repository, built into a wheel, and installed into a fresh
virtual environment (no system site-packages, dependencies from the package index); then, from
a directory outside the repository and with no PYTHONPATH, the INSTALLED admin CLI creates a
tenant and a key, and the INSTALLED client starts the INSTALLED server over stdio (once the
client's default way, once exactly as claude_desktop_config.stdio.json says) and calls tools.

Downloads the dependencies (allow a few minutes on a cold pip cache). Skip it explicitly with
MCPFORGE_SKIP_WHEEL_TEST=1; it is never skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

GENERATED = ROOT / "generated"
PKG = "fastn_gateway"
SKIP_ENV = "MCPFORGE_SKIP_WHEEL_TEST"

pytestmark = pytest.mark.skipif(
    os.environ.get(SKIP_ENV) == "1", reason=f"{SKIP_ENV}=1: wheel build and install skipped"
)

CLIENT_SCRIPT = r"""
import asyncio, importlib.resources, json, sys
import fastn_gateway
from fastn_gateway.client import GatewayClient, GatewayClientError
from fastn_gateway.models.personalization import UpdateMemoryInputObservation

key, db, config_path = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"package_file": fastn_gateway.__file__}
shipped = importlib.resources.files("fastn_gateway")
out["shipped_tools"] = sorted(
    t["name"] for t in json.loads((shipped / "tools.json").read_text())["tools"]
)
out["tools_md"] = (shipped / "TOOLS.md").read_text().count("### `")
try:
    import generator  # noqa: F401  (the repository must not be importable)
    out["repo_importable"] = True
except ImportError:
    out["repo_importable"] = False


async def main() -> None:
    async with GatewayClient.stdio(api_key=key, env={"FASTN_GATEWAY_DATABASE_URL": db}) as gw:
        out["tools"] = sorted(t.name for t in await gw.list_tools())
        usage = await gw.fastn_get_usage_summary()
        out["plan"] = usage.plan
        await gw.update_memory(observations=[
            UpdateMemoryInputObservation(text="Ash prefers meetings after 2pm", topic="meetings")])
        answer = await gw.search_or_ask(question="When does Ash prefer meetings?")
        out["answer"] = answer.answer
        try:
            await gw.slack_send_message(channel="general", text="hi")
        except GatewayClientError as err:
            out["hidden"] = err.envelope()
    # exactly what the Claude Desktop snippet starts (placeholders filled in)
    entry = next(iter(json.load(open(config_path))["mcpServers"].values()))
    args = [db if a.startswith("/ABSOLUTE/PATH/TO/") else a for a in entry["args"]]
    env = {k: key for k in entry["env"]}
    async with GatewayClient.stdio(command=entry["command"], args=args, env=env) as gw:
        out["snippet_calls"] = (await gw.fastn_get_usage_summary()).calls

asyncio.run(main())
print(json.dumps(out))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_wheel_installs_into_a_clean_venv_and_serves_over_stdio(tmp_path: Path) -> None:
    meta = (GENERATED / "pyproject.toml").read_text(encoding="utf-8")
    dist = re.search(r'^name = "([^"]+)"', meta, re.M).group(1)  # type: ignore[union-attr]
    version = re.search(r'^version = "([^"]+)"', meta, re.M).group(1)  # type: ignore[union-attr]
    src = tmp_path / "src"
    shutil.copytree(
        GENERATED,
        src,
        ignore=shutil.ignore_patterns("__pycache__", "dist", "build", "var", ".mcpforge-files"),
    )
    # A publisher's own license file next to the generated ones (the generator does not own it)
    (src / "LICENSE").write_text("Apache License\nVersion 2.0, January 2004\n", encoding="utf-8")
    # ... in the publisher's repository, whose .gitignore must not drop package files from the
    # wheel (a `models/` line there ignores the models of some other part of that repository)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("models/\ncatalog/\n*.json\n", encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PIP_NO_INPUT"] = "1"

    wheels = tmp_path / "wheels"
    _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(src)],
        cwd=tmp_path,
        env=env,
    )
    [wheel] = wheels.glob("*.whl")
    assert wheel.name.startswith(f"{dist.replace('-', '_')}-{version}-py3-none-any")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {
        f"{PKG}/client.py",
        f"{PKG}/runtime/client_base.py",
        f"{PKG}/py.typed",
        f"{PKG}/catalog/__init__.py",
        f"{PKG}/models/__init__.py",
        f"{PKG}/models/personalization.py",
        f"{PKG}/TOOLS.md",
        f"{PKG}/tools.json",
        f"{PKG}/claude_desktop_config.stdio.json",
        f"{dist.replace('-', '_')}-{version}.dist-info/licenses/LICENSE",
    } <= names
    assert not any(n.startswith(("generator/", "tests/")) for n in names)
    assert "License-Expression: Apache-2.0" in metadata and f"Name: {dist}" in metadata
    assert f"{dist} = {PKG}.__main__:main" in entry_points

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    bin_dir = venv / "bin"
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )

    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    db = str(work / "gateway.db")
    cli = [str(bin_dir / dist), "admin", "--db", db]
    _run([*cli, "tenant", "create", "acme"], cwd=work, env=env)
    _run([*cli, "user", "register", "acme", "ash"], cwd=work, env=env)
    issued = _run(
        [*cli, "key", "issue", "acme", "--scopes", "read,write", "--user", "ash"], cwd=work, env=env
    )
    key = re.search(r"API key[^:]*: (gwk_\S+)", issued).group(1)  # type: ignore[union-attr]

    script = work / "use_client.py"
    script.write_text(CLIENT_SCRIPT, encoding="utf-8")
    config = GENERATED / "claude_desktop_config.stdio.json"
    out = json.loads(
        _run(
            [str(bin_dir / "python"), str(script), key, db, str(config)],
            cwd=work,
            env=env,
            timeout=300,
        )
        .strip()
        .splitlines()[-1]
    )
    assert Path(out["package_file"]).is_relative_to(venv)
    assert out["repo_importable"] is False
    assert {"fastn_get_usage_summary", "search_or_ask", "update_memory"} <= set(out["tools"])
    catalog = json.loads((GENERATED / "tools.json").read_text(encoding="utf-8"))
    assert (
        out["shipped_tools"] == sorted(t["name"] for t in catalog["tools"]) and out["tools_md"] > 20
    )
    assert not any(t.startswith("slack_") for t in out["tools"])
    assert out["plan"] == "starter"
    assert "2pm" in out["answer"]
    assert out["hidden"]["error"]["code"] == "unknown_tool"
    assert out["snippet_calls"] >= 1

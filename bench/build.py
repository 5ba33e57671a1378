"""Build benchmark: wall time and peak memory of `gen build` on synthetic catalogs.

    .venv/bin/python bench/build.py              # 10, 100, 1,000 and 5,000 tools
    .venv/bin/python bench/build.py --quick      # 10 and 100 only
    .venv/bin/python bench/build.py --sizes 1000,2000

For each size N a scratch project holds N synthetic connector tools (bench/synthetic.py) plus
the default gateway, native and personalization manifests, and `gen build` runs as a
subprocess in these states:

  cold      empty cache and empty output directory
  no-op     nothing changed since the previous build
  edit      one capability description of one connector changed
  check     `gen build --check` on a fresh output

The baseline, in the same run, is datamodel-code-generator alone (its Python API, builtin
formatter, the options of generator/datamodel.py) on the same compiled schemas (the tools of
the generated tools.json) in ONE call, in its own process. A no-op rebuild of the default
manifests is measured too.

Memory is the peak of the whole process tree: a sampler sums the resident set (RSS) of the
process and all its descendants (worker processes, ruff) every few milliseconds; the kernel's
own high-water mark of the largest single process (wait4 ru_maxrss) is a floor. RSS counts a
page shared by a forked worker and its parent twice, so it is the pessimistic figure; the
proportional set size (PSS, shared pages split between sharers; read every 10th sample only, as
the kernel walks page tables for it) is recorded in the JSON too.

Prints a Markdown table (for the README) and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024

# datamodel-code-generator with the generator's options (generator/datamodel.py imports
# nothing else) and its builtin formatter: finished code, as the library makes it alone.
BASELINE_CODE = r"""
import json, sys
from generator.datamodel import generate
payload = json.loads(open(sys.argv[1], encoding="utf-8").read())
open(sys.argv[2], "w", encoding="utf-8").write(generate(payload, formatted=True))
"""

# The memory floor of a build: one process with the generator loaded and datamodel-code-generator
# loaded and warmed up (a one-property model generated), nothing built.
FLOOR_CODE = """
from generator import api
from generator.emit import artifacts, catalog, client, models, package
from generator.datamodel import warm_up
warm_up()
"""


# ---------------------------------------------------------------------------- measuring


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the process and its descendants
    rss_mb: float  # peak of the summed RSS of the process tree (or the largest process)
    pss_mb: float  # peak of the summed PSS of the process tree
    max_single_mb: float  # largest single process (kernel high-water mark)
    processes: int  # distinct processes seen in the tree
    returncode: int
    stderr: str = field(default="", repr=False)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                out.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    """Costly: the kernel walks the page tables (about 2 ms for a 150 MB process)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


PSS_EVERY = 10  # samples: PSS is read every 10th time only, so that the sampler (a few
#                 percent of a core) does not slow down builds that use both cores more
#                 than the single-process baseline


def measure(
    cmd: list[str], *, cwd: Path = REPO, interval: float = 0.01, env: dict[str, str] | None = None
) -> Run:
    env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    env.pop("CI", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = {"rss": 0, "pss": 0}
    seen: set[int] = set()
    done = threading.Event()

    def sample() -> None:
        n = 0
        while not done.is_set():
            pids = _tree(proc.pid)
            seen.update(pids)
            peak["rss"] = max(peak["rss"], sum(_rss(pid) for pid in pids))
            if n % PSS_EVERY == 0:
                peak["pss"] = max(peak["pss"], sum(_pss(pid) for pid in pids))
            n += 1
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", errors="replace")  # until the process closes it
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    single = usage.ru_maxrss * 1024  # KiB on Linux: the child or its largest waited descendant
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=max(peak["rss"], single) / MB,
        pss_mb=max(peak["pss"], single if len(seen) <= 1 else 0) / MB,
        max_single_mb=single / MB,
        processes=len(seen),
        returncode=proc.returncode,
        stderr=err,
    )


COLD_REPEAT_SMALL = 5  # cold build / baseline pairs under 1,000 tools (a second or two each)
GEN_ENV: dict[str, str] = {}  # PYTHONPATH of the generator snapshot, when one is used


def snapshot_generator(work: Path) -> Path:
    """Copy generator/ and templates/ so that edits others make to the working tree while the
    benchmark runs (which change the generator's fingerprint, hence every cache key) cannot
    disturb it. The copy is byte-compiled before anything is measured."""
    snap = work / "generator-snapshot"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "generator", snap / "generator", ignore=ignore)
    shutil.copytree(REPO / "templates", snap / "templates", ignore=ignore)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(snap)], check=True)
    return snap


def gen_cmd(*args: str) -> list[str]:
    # -P: no current directory on sys.path. The commands run in the repository, whose own
    # generator/ would otherwise come before the snapshot on PYTHONPATH.
    return [sys.executable, "-P", "-m", "generator", *args]


def run_ok(cmd: list[str], what: str, expect: int = 0) -> Run:
    run = measure(cmd, env=GEN_ENV)
    if run.returncode != expect:
        sys.stderr.write(f"{what} exited {run.returncode}:\n{run.stderr[-4000:]}\n")
        raise SystemExit(1)
    return run


def median_run(runs: list[Run]) -> dict[str, Any]:
    return {
        "wall_s": statistics.median(r.wall for r in runs),
        "cpu_s": statistics.median(r.cpu for r in runs),
        "rss_mb": statistics.median(r.rss_mb for r in runs),
        "pss_mb": statistics.median(r.pss_mb for r in runs),
        "max_single_mb": statistics.median(r.max_single_mb for r in runs),
        "processes": max(r.processes for r in runs),
        "runs": [round(r.wall, 3) for r in runs],
    }


# ---------------------------------------------------------------------------- scenarios


def bench_size(work: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    root = work / f"tools-{size}"
    catalog = synthetic.write_project(
        root, tools=size, per_connector=args.per_connector, seed=args.seed
    )
    build = gen_cmd(
        "build", "--project", str(root), *(["--jobs", str(args.jobs)] if args.jobs else [])
    )
    print(f"[{size} tools, {len(catalog.connectors)} connectors]", file=sys.stderr, flush=True)

    # Cold builds and baseline runs alternate (build, baseline, baseline, build, ...): on a
    # shared machine the load drifts within seconds, and runs far apart in time compare that
    # drift as much as the two programs. Each pair's ratio is kept; their median is the ratio
    # reported. The baseline needs the compiled schemas, so the first build comes first; it
    # leaves the output alone, so the scenarios below start from a finished cold build.
    repeat = args.cold_repeat or (COLD_REPEAT_SMALL if size < 1000 else 1)
    payload_path = root / "baseline-input.json"
    baseline = [
        sys.executable,
        "-P",
        "-c",
        BASELINE_CODE,
        str(payload_path),
        str(root / "baseline-models.py"),
    ]

    def cold() -> Run:
        shutil.rmtree(root / ".mcpforge-cache", ignore_errors=True)
        shutil.rmtree(root / "generated", ignore_errors=True)
        return run_ok(build, "cold build")

    cold_runs: list[Run] = []
    base_runs: list[Run] = []
    for i in range(repeat):
        if args.no_baseline:
            cold_runs.append(cold())
            continue
        if i % 2 == 0:
            cold_runs.append(cold())
            if i == 0:
                _baseline_input(root, payload_path)
            base_runs.append(run_ok(baseline, "datamodel-codegen"))
        else:
            base_runs.append(run_ok(baseline, "datamodel-codegen"))
            cold_runs.append(cold())
    print(f"  cold   {cold_runs[-1].wall:7.2f} s", file=sys.stderr, flush=True)
    if base_runs:
        print(f"  dmcg   {base_runs[-1].wall:7.2f} s", file=sys.stderr, flush=True)
    noop_runs = [run_ok(build, "no-op build") for _ in range(args.repeat)]
    print(f"  no-op  {noop_runs[-1].wall:7.2f} s", file=sys.stderr, flush=True)
    check_runs = [run_ok([*build, "--check"], "build --check") for _ in range(args.repeat)]
    print(f"  check  {check_runs[-1].wall:7.2f} s", file=sys.stderr, flush=True)
    edit_runs = []
    for i in range(args.repeat):
        synthetic.edit_one_connector(catalog, round=i + 1)
        edit_runs.append(run_ok(build, "build after an edit"))
    print(f"  edit   {edit_runs[-1].wall:7.2f} s", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "tools": catalog.tools,
        "connector_tools": catalog.connector_tools,
        "connectors": len(catalog.connectors),
        "load_average": os.getloadavg(),
        "manifest_bytes": sum(p.stat().st_size for p in (root / "manifests").rglob("*.yaml")),
        "cold": median_run(cold_runs),
        "noop": median_run(noop_runs),
        "check": median_run(check_runs),
        "edit": median_run(edit_runs),
    }
    if base_runs:
        result["baseline"] = median_run(base_runs)
        result["paired_ratios"] = [
            round(c.wall / b.wall, 3) for c, b in zip(cold_runs, base_runs, strict=True)
        ]
        result["time_ratio"] = statistics.median(result["paired_ratios"])
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _baseline_input(root: Path, payload_path: Path) -> None:
    """The baseline's input: every tool's compiled schemas, from the build's tools.json, as
    the build gives them to datamodel-code-generator (generator/emit/models.py `request`)."""
    from generator.compile import for_models, for_output_models

    tools_json = json.loads((root / "generated" / "tools.json").read_text(encoding="utf-8"))
    payload = {
        "tools": [
            {
                "name": t["name"],
                "inputSchema": for_models(t["inputSchema"]),
                "outputSchema": for_output_models(t["outputSchema"]),
            }
            for t in tools_json["tools"]
        ]
    }
    payload_path.write_text(json.dumps(payload), encoding="utf-8")


def bench_defaults(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """No-op rebuild of the repository's default manifests (in a scratch copy)."""
    root = work / "defaults"
    shutil.copytree(REPO / "manifests", root / "manifests")
    build = gen_cmd("build", "--project", str(root))
    cold = run_ok(build, "default cold build")
    noop = [run_ok(build, "default no-op build") for _ in range(args.repeat)]
    check = [run_ok([*build, "--check"], "default build --check") for _ in range(args.repeat)]
    print(f"[defaults] cold {cold.wall:.2f} s, no-op {noop[-1].wall:.2f} s", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return {"cold": median_run([cold]), "noop": median_run(noop), "check": median_run(check)}


# ---------------------------------------------------------------------------- report

TARGET_EDIT_S = 3.0
TARGET_NOOP_DEFAULT_S = 1.5


def table(results: dict[str, Any]) -> str:
    rows = [
        "| tools | connectors | cold build | no-op | edit one connector | `--check` "
        "| datamodel-codegen alone | cold / dmcg: time | memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(run: dict[str, Any]) -> str:
        return f"{run['wall_s']:.2f} s (CPU {run['cpu_s']:.1f} s), {run['rss_mb']:.0f} MB"

    for r in results["sizes"]:
        base = r.get("baseline")
        cold = r["cold"]
        cells = [
            f"{r['tools']:,}",
            f"{r['connectors']:,}",
            cell(cold),
            f"{r['noop']['wall_s']:.2f} s",
            f"{r['edit']['wall_s']:.2f} s",
            f"{r['check']['wall_s']:.2f} s",
        ]
        if base:
            cells += [
                cell(base),
                f"{r['time_ratio']:.2f}x",
                f"{cold['rss_mb'] / base['rss_mb']:.2f}x "
                f"(PSS {cold['pss_mb'] / base['pss_mb']:.2f}x)",
            ]
        else:
            cells += ["-", "-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    d = results.get("defaults")
    lines = ["\n".join(rows), ""]
    if d:
        lines.append(
            f"Default manifests: no-op rebuild {d['noop']['wall_s']:.2f} s, `--check` "
            f"{d['check']['wall_s']:.2f} s, cold {d['cold']['wall_s']:.2f} s."
        )
    floor = results.get("floor")
    if floor:
        lines.append(
            f"Floor: one process with the generator and datamodel-codegen loaded (warmed up), "
            f"nothing built: {floor['rss_mb']:.0f} MB."
        )
    m = results["machine"]
    lines.append(
        f"Measured on {m['cpus']} CPUs (load average {m['load_average'][0]:.1f} at the start), "
        f"Python {m['python']}, datamodel-code-generator {m['datamodel_code_generator']}, ruff "
        f"{m['ruff']}. Memory: peak RSS of the whole process tree (workers and ruff included; "
        "pages shared by forked workers counted in each), and in brackets the ratio of peak "
        "PSS (shared pages split between the processes sharing them). "
        f"Times: medians of {results['args']['repeat']} runs; cold builds and datamodel-codegen "
        "run alternately (pairs: "
        + ", ".join(f"{len(r['cold']['runs'])} at {r['tools']:,} tools" for r in results["sizes"])
        + "), and the time ratio is the median of the pairs' ratios. Tools include the 9 native "
        "and personalization tools."
    )
    return "\n".join(lines) + "\n"


def verdicts(results: dict[str, Any]) -> list[str]:
    out = []
    floor = results.get("floor")
    for r in results["sizes"]:
        base = r.get("baseline")
        if base:
            t = r["time_ratio"] <= 1.0
            m = r["cold"]["rss_mb"] < base["rss_mb"] / 2
            out.append(
                f"{'PASS' if t else 'MISS'} cold {r['tools']:,} tools no slower than "
                f"datamodel-codegen ({r['time_ratio']:.2f}x, median of {len(r['paired_ratios'])} "
                f"alternating pairs; medians {r['cold']['wall_s']:.2f} s vs {base['wall_s']:.2f} s)"
            )
            why = ""
            if not m and floor and floor["rss_mb"] >= base["rss_mb"] / 2:
                why = (
                    f"; unreachable: the generator and datamodel-codegen loaded, nothing built, "
                    f"take {floor['rss_mb']:.0f} MB"
                )
            out.append(
                f"{'PASS' if m else 'MISS'} cold {r['tools']:,} tools under half its peak "
                f"memory ({r['cold']['rss_mb']:.0f} MB vs {base['rss_mb']:.0f} MB{why})"
            )
        if r["connector_tools"] >= 5000:
            ok = r["edit"]["wall_s"] < TARGET_EDIT_S
            out.append(
                f"{'PASS' if ok else 'MISS'} edit one connector of {r['tools']:,} tools "
                f"under {TARGET_EDIT_S:.0f} s ({r['edit']['wall_s']:.2f} s)"
            )
    d = results.get("defaults")
    if d:
        ok = d["noop"]["wall_s"] < TARGET_NOOP_DEFAULT_S
        out.append(
            f"{'PASS' if ok else 'MISS'} no-op rebuild of the default manifests under "
            f"{TARGET_NOOP_DEFAULT_S} s ({d['noop']['wall_s']:.2f} s)"
        )
    return out


def git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        proc = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "generator_dirty": bool(git("status", "--porcelain", "--", "generator", "templates")),
    }


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "datamodel_code_generator": version("datamodel-code-generator"),
        "ruff": version("ruff"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="sizes 10 and 100 only")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated connector tool counts [default: 10,100,1000,5000]",
    )
    parser.add_argument(
        "--per-connector",
        type=int,
        default=20,
        help="capabilities per synthetic connector [default: 20]",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each warm scenario; the median is reported [default: 3]",
    )
    parser.add_argument(
        "--cold-repeat",
        type=int,
        default=None,
        help="alternating runs of each cold build and baseline [default: "
        f"{COLD_REPEAT_SMALL} under 1,000 tools, else 1]",
    )
    parser.add_argument("--jobs", type=int, default=None, help="passed to gen build --jobs")
    parser.add_argument("--no-baseline", action="store_true", help="skip datamodel-codegen")
    parser.add_argument(
        "--no-defaults", action="store_true", help="skip the default-manifest no-op rebuild"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch directory [default: a new temporary directory]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the working tree's generator instead of a snapshot of it",
    )
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    elif args.quick:
        sizes = [10, 100]
    else:
        sizes = [10, 100, 1000, 5000]

    own_tmp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="mcpforge-bench-")) if own_tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
    }
    results["args"]["sizes"] = sizes
    results["git"] = git_state()
    try:
        if not args.live:
            GEN_ENV["PYTHONPATH"] = str(snapshot_generator(work))
            used = subprocess.run(
                [*gen_cmd()[:2], "-c", "import generator; print(generator.__file__)"],
                cwd=REPO,
                env={**os.environ, **GEN_ENV},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if not used.startswith(GEN_ENV["PYTHONPATH"]):
                raise SystemExit(f"the benchmark would run {used}, not its snapshot")
        if not args.no_defaults:
            results["defaults"] = bench_defaults(work, args)
        if not args.no_baseline:
            results["floor"] = median_run(
                [run_ok([sys.executable, "-P", "-c", FLOOR_CODE], "floor") for _ in range(3)]
            )
        for size in sizes:
            results["sizes"].append(bench_size(work, size, args))
    finally:
        if own_tmp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS / f"build-{stamp}.json").write_text(text, encoding="utf-8")
    (RESULTS / "build-latest.json").write_text(text, encoding="utf-8")
    print(table(results))
    for line in verdicts(results):
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

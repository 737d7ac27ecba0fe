"""The project's import graph: no cycles, no upward imports, every module importable alone.

The static part reads every `import` (module level, inside functions, and under
TYPE_CHECKING) of the project's packages. The dynamic part imports each module alone in a
process that has loaded nothing of the project (forked from one that preloaded the heavy
third-party libraries, to keep it quick), from an empty working folder that must stay empty:
importing a module creates no folder and loads no model.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "fraud_core", "fraud_data", "fraud_training", "fraud_assets", "serving", "streaming",
    "fraud_devtools", "bench",
)  # fmt: skip

ALLOWED = {
    "fraud_core": {"fraud_core"},
    "fraud_data": {"fraud_core", "fraud_data"},
    "fraud_training": {"fraud_core", "fraud_training"},
    "fraud_assets": {"fraud_core", "fraud_data", "fraud_training", "fraud_assets"},
    "serving": {"fraud_core", "serving"},
    "streaming": {"fraud_core", "fraud_data", "streaming"},
    "fraud_devtools": set(PACKAGES) - {"bench"},
    "bench": set(PACKAGES),
}
"""Which packages each package may import. Demos (`<package>.demo`) may also use
fraud_devtools and fraud_data, as the benchmarks and tests do; the `fraudscale` command
(`fraud_data.cli`) runs the backtest of fraud_training."""


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            targets |= {t for n in names if (t := resolve(n)) and t != module}
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_in_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_package_imports_one_above_it() -> None:
    wrong = []
    for module, targets in import_graph().items():
        package = module.split(".")[0]
        allowed = ALLOWED[package]
        if module.endswith(".demo"):
            allowed = allowed | {"fraud_devtools", "fraud_data"}
        if module == "fraud_data.cli":
            allowed = allowed | {"fraud_training"}
        wrong += [f"{module} -> {t}" for t in sorted(targets) if t.split(".")[0] not in allowed]
    assert wrong == []


PRELOADED = (
    "numpy", "pyarrow", "pyarrow.compute", "pyarrow.parquet", "msgspec", "onnx", "onnxruntime",
    "rich", "dagster", "dagster_pyspark", "pyspark.sql", "mlflow", "lightgbm", "sklearn",
    "litestar", "uvicorn", "redis", "faust", "aiokafka", "prometheus_client", "opentelemetry",
    "duckdb", "polars", "httpx",
)  # fmt: skip

FORK_EACH = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception:
            pass  # an optional dependency a module does not need at import
    failures = {}
    for module in json.loads(sys.argv[2]):
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(module)
                left = os.listdir(".")
                if left:
                    print(f"importing it created {left}", flush=True)
                    os._exit(2)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                sys.stdout.flush()
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if status:
            failures[module] = status
    print("FAILURES " + json.dumps(failures))
    """
)


def test_every_module_imports_alone_without_side_effects(tmp_path: Path) -> None:
    names = sorted(m for m in modules() if not m.endswith("__main__"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH, json.dumps(PRELOADED), json.dumps(names)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert last.startswith("FAILURES "), done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(last.removeprefix("FAILURES ")) == {}, done.stdout[-4000:]

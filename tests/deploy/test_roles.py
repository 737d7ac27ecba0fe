"""Each image role installs only its extra (deploy/Containerfile): every third-party module
the role's code imports must come from that extra's locked dependency closure, or the role
fails at start in its image (as the assets image once did without prometheus-client)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"fraud_core", "fraud_data", "fraud_training", "fraud_assets", "fraud_devtools",
           "serving", "streaming", "bench", "tests"}  # fmt: skip
ROLES = {
    "serving": ["serving", "fraud_core"],
    "streaming": ["streaming", "fraud_core"],
    "assets": ["fraud_assets", "fraud_core", "fraud_training", "fraud_data"],
}
LOCAL_ONLY = {"demo.py"}
"""Modules a role's image never runs: the demos start local Redis, Kafka and workers
(fraud_devtools) on one machine."""

NOT_ON_THIS_ROLE = {"streaming": {"mlflow"}}
"""Imports a role never reaches: fraud_core.model_store imports mlflow only to follow a
registry, which the stream workers do not (StreamSettings has no tracking URI)."""

pytestmark = pytest.mark.unit


def imports(packages: list[str]) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in `packages`, by importing file."""
    out: dict[str, set[str]] = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if path.name in LOCAL_ONLY:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in PROJECT and top not in sys.stdlib_module_names:
                        out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


@cache
def closure(role: str) -> set[str]:
    """Distributions `uv sync --extra <role> --no-dev` installs (from uv.lock), and the
    `native` extra (fraud_native, installed from a wheel built beside the image)."""
    exported = subprocess.run(
        [str(ROOT / ".tools" / "bin" / "uv"), "export", "--frozen", "--no-dev",
         "--extra", role, "--extra", "native", "--no-emit-project", "--no-hashes",
         "--no-header"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    names = set()
    for line in exported.splitlines():
        line = line.strip()
        if line.startswith("./"):  # a path source: the project in that folder
            pyproject = ROOT / line.split(";")[0].strip() / "pyproject.toml"
            names.add(normalize(tomllib.loads(pyproject.read_text())["project"]["name"]))
        elif line and not line.startswith(("#", "-")):
            names.add(normalize(line.split("==")[0].split(";")[0].split("[")[0]))
    return names


def normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@pytest.mark.parametrize("role", ROLES)
def test_a_roles_code_imports_only_what_its_image_installs(role: str) -> None:
    providers = packages_distributions()
    missing = {}
    for module, files in imports(ROLES[role]).items():
        if module in NOT_ON_THIS_ROLE.get(role, set()):
            continue
        dists = {normalize(d) for d in providers.get(module, [module])}
        if not dists & closure(role):
            missing[module] = sorted(files)[:3]
    assert not missing, f"the {role} image lacks: {missing}"

"""The served OpenAPI document against the service itself: schemathesis, every check.

A real uvicorn server with API keys (so the authentication checks have something to check)
answers every case schemathesis generates from /docs/openapi.json; each answer must be
documented, in the documented schema, and a valid request must be accepted. Bounded: a few
dozen examples per operation, so it fits in `make test`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fraud_core.model_store import ModelStore
from fraud_devtools.rest_server import running_server
from serving.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_nothing_with_all_checks(tmp_path: Path, trained) -> None:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    settings = ServingSettings(
        model_store_dir=str(store.root), api_keys="scorer:score+infer,reader:score"
    )
    st = Path(sys.executable).with_name("st")
    with running_server(create_app(settings)) as address:
        done = subprocess.run(
            [str(st), "--config-file", str(CONFIG), "run", f"http://{address}/docs/openapi.json",
             "--checks", "all", "--max-examples", "25", "--seed", "1",
             "-H", "X-API-Key: scorer", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout

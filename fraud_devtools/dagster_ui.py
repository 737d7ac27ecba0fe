"""`dagster dev` (webserver and daemon) on a loopback port, over a Dagster instance of its own:
for the browser tests of the UI."""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fraud_devtools.processes import LocalProcess, free_port, start_process

INSTANCE = """\
telemetry:
  enabled: false
"""


class LocalDagsterDev(LocalProcess):
    """The code location `fraud_assets.definitions` served with its daemon (backfills,
    schedules), with FRAUD_ASSETS_* settings from `env` and DAGSTER_HOME under `folder`."""

    def __init__(self, folder: Path, env: Mapping[str, str], port: int | None = None) -> None:
        self.folder, self.port = folder, port or free_port()
        self.home = folder / "dagster_home"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"dagster-dev-{self.port}.log"
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(self.home)}

    def start(self, timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(INSTANCE)
        dagster = Path(sys.executable).with_name("dagster")
        self.process = start_process(
            [str(dagster), "dev", "-m", "fraud_assets.definitions",
             "-h", "127.0.0.1", "-p", str(self.port)],
            f"dagster dev on port {self.port}", self._loaded, timeout,
            log=self.log_path, env=self.env,
        )  # fmt: skip

    def _loaded(self) -> bool:
        """The webserver answers and the code location has loaded (it lists our assets)."""
        query = b'{"query": "{ assetNodes { assetKey { path } } }"}'
        request = urllib.request.Request(
            f"{self.url}/graphql", data=query, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return b"raw_transactions" in response.read()
        except OSError:
            return False

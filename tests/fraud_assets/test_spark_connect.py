"""The long-lived Spark Connect server that `make spark-server` keeps for nightly runs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fraud_devtools.processes import free_port, port_answers, wait_until

pytestmark = pytest.mark.integration


def test_a_supervisor_stopping_the_server_stops_its_jvm(tmp_path: Path) -> None:
    """SIGTERM (systemd, Kubernetes, `kill`) ends the server's JVM too, not only Ctrl-C: a
    JVM left behind would keep the port and the memory of the next server."""
    port = free_port()
    command = [sys.executable, "-m", "fraud_devtools.spark_connect", "--port", str(port),
               "--master", "local[1]", "--folder", str(tmp_path)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_answers("127.0.0.1", port), "the Spark Connect server", 120)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        wait_until(lambda: not port_answers("127.0.0.1", port), "the server JVM to exit", 30)
    finally:
        server.kill()

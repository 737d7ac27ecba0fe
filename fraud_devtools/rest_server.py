"""Running the service's parts on this machine's loopback: for the demo and the tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn
from litestar import Litestar

from fraud_devtools.processes import free_port, wait_until
from serving.server import server_options


@contextlib.contextmanager
def running_server(app: Litestar) -> Iterator[str]:
    """The app under a real uvicorn server (the service's settings) on a free loopback port;
    yields host:port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **server_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the REST server", 20)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

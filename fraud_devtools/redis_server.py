"""Debian's redis-server on a loopback port, for the demo, the benchmarks and the tests."""

from __future__ import annotations

from pathlib import Path

from fraud_devtools.processes import LocalProcess, free_port, start_process


class LocalRedis(LocalProcess):
    """Debian's redis-server in the foreground, without persistence, on a loopback port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.port, self.folder = port or free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis  # the serving and streaming extras install it

        client = redis.Redis(port=self.port, socket_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        self.process = start_process(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            "redis-server", answers, 10,
        )  # fmt: skip

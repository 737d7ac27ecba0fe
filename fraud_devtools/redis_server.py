"""Debian's redis-server on loopback ports, for the demo, the benchmarks and the tests: one
server (`LocalRedis`), a primary and a replica watched by three Sentinels (`LocalSentinel`),
and a Redis Cluster of three primaries with a replica each (`LocalRedisCluster`)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from fraud_devtools.processes import LocalProcess, free_port, start_process, wait_until

_clients: dict[int, Any] = {}


def _ping(port: int) -> Any:
    """A client of the server or Sentinel on `port`, one per port, kept until `_forget`."""
    import redis  # the serving and streaming extras install it

    if port not in _clients:
        _clients[port] = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _clients[port]


def _forget(ports: list[int]) -> None:
    for port in ports:
        client = _clients.pop(port, None)
        if client is not None:
            client.close()


def _answers(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class LocalRedis(LocalProcess):
    """Debian's redis-server in the foreground, without persistence, on a loopback port;
    `options` are more of its command-line settings (e.g. ["--replicaof", host, port])."""

    def __init__(self, folder: Path, port: int | None = None, options: list[str] | None = None):
        self.port, self.folder = port or free_port(), folder
        self.options = options or []
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.process = start_process(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder), *self.options],
                "redis-server", lambda: _answers(_ping(self.port)), 10,
                log=self.folder / "redis.log",
            )  # fmt: skip
        finally:
            _forget([self.port])


SENTINEL_SERVICE = "fraudscale"


class LocalSentinel:
    """A primary, one replica and three Sentinels (quorum 2) on loopback, failing over a
    second after the primary stops answering. `url` is the `redis+sentinel://` URL the
    services take; `kill_primary` kills whichever server is the primary now."""

    def __init__(self, folder: Path, down_after_ms: int = 1000) -> None:
        self.folder, self.down_after_ms = folder, down_after_ms
        first = LocalRedis(folder / "redis-a")
        self.servers = [
            first,
            LocalRedis(folder / "redis-b", options=["--replicaof", "127.0.0.1", str(first.port)]),
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[LocalProcess] = []
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"
        self._killed = 0

    def start(self) -> None:
        for server in self.servers:
            server.start()
        primary = self.servers[0].port
        for port in self.sentinel_ports:
            folder = self.folder / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # Sentinel rewrites its own file
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
            )
            client = _ping(port)
            process = LocalProcess()
            process.process = start_process(
                ["redis-server", str(config), "--sentinel"], "redis-sentinel",
                functools.partial(_answers, client), 10, log=folder / "sentinel.log",
            )  # fmt: skip
            self.sentinels.append(process)
        # Ready when every Sentinel knows the replica and the two other Sentinels (it can
        # then agree on a failover and has a server to promote).
        clients = [_ping(port) for port in self.sentinel_ports]
        wait_until(
            lambda: all(
                c.sentinel_slaves(SENTINEL_SERVICE)
                and len(c.sentinel_sentinels(SENTINEL_SERVICE)) == 2
                for c in clients
            ),
            "Sentinels that know the replica and each other", 30,
        )  # fmt: skip

    def primary_port(self) -> int:
        """The primary's port, as the Sentinels name it now."""
        _, port = _ping(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        return int(port)

    def kill_primary(self, key: str = "") -> LocalRedis:
        """SIGKILL the primary (every key's; the replica takes over once the Sentinels
        agree); returns it."""
        port = self.primary_port()
        (server,) = [s for s in self.servers if s.port == port]
        server.kill()
        self._killed = port
        return server

    def wait_for_failover(self, seconds: float = 30) -> None:
        """Wait until every Sentinel names a primary other than the killed one, up and not
        flagged down, and it accepts writes."""

        def settled() -> bool:
            masters = [_ping(p).sentinel_master(SENTINEL_SERVICE) for p in self.sentinel_ports]
            ports = {int(m["port"]) for m in masters}
            return (
                len(ports) == 1
                and self._killed not in ports
                and all(m["flags"] == "master" for m in masters)
                and _ping(ports.pop()).info("replication")["role"] == "master"
            )

        wait_until(settled, "a Sentinel failover", seconds)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.kill()
        self.sentinels = []
        _forget([*self.sentinel_ports, *(server.port for server in self.servers)])


class LocalRedisCluster:
    """A Redis Cluster on loopback: three primaries with a replica each (six redis-servers),
    a node declared failed after `node_timeout_ms`. `url` is the `redis+cluster://` URL."""

    def __init__(self, folder: Path, node_timeout_ms: int = 1000) -> None:
        self.folder = folder
        self.nodes = []
        for i in range(6):
            port = free_port()
            self.nodes.append(
                LocalRedis(folder / f"node-{i}", port, options=[
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    # The bus's own port: port + 10000 is past 65535 for high free ports.
                    "--cluster-port", str(free_port()),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-require-full-coverage", "no",
                ])
            )  # fmt: skip
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        self.url = f"redis+cluster://{hosts}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(self._healthy, "a Redis Cluster with every slot and replica", 30)

    def _healthy(self, replicas: bool = True) -> bool:
        """Every live node sees the cluster ok, every slot's primary is alive (and, with
        `replicas`, has a replica)."""
        import redis

        alive = self._alive()
        try:
            if any(_ping(port).cluster("info")["cluster_state"] != "ok" for port in alive):
                return False
            shards = _ping(min(alive)).cluster("slots")
        except redis.RedisError:
            return False
        return (
            all(int(shard[2][1]) in alive and (not replicas or len(shard) > 3) for shard in shards)
            and sum(shard[1] - shard[0] + 1 for shard in shards) == 16384
        )

    def _alive(self) -> set[int]:
        """The ports of the nodes running."""
        return {node.port for node in self.nodes if node.process is not None}

    def kill_primary(self, key: str) -> LocalRedis:
        """SIGKILL the primary that serves `key`'s slot; returns it."""
        client = _ping(min(self._alive()))
        slot = client.cluster("keyslot", key)
        for shard in client.cluster("slots"):
            if shard[0] <= slot <= shard[1]:
                port = int(shard[2][1])
        (node,) = [n for n in self.nodes if n.port == port]
        node.kill()
        return node

    def wait_for_failover(self, seconds: float = 30) -> None:
        """Wait until every slot is served by a live primary again (a replica promoted in
        the dead one's place)."""
        wait_until(lambda: self._healthy(replicas=False), "a cluster failover", seconds)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        _forget([node.port for node in self.nodes])

"""Prometheus and its Pushgateway on loopback, built from the Go module proxy into .tools/bin
(`make prometheus`): for the tests and for watching a local set-up.

`python -m fraud_devtools.prometheus --rest 127.0.0.1:8000 --stream 127.0.0.1:6066` starts
both with fraudscale's rules, scraping a local REST service and stream worker, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fraud_devtools.processes import LocalProcess, free_port, port_answers, start_process

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools" / "bin"
RULES = ROOT / "helm" / "fraudscale" / "files" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "helm" / "fraudscale" / "files" / "grafana" / "fraudscale.json"
ASSETS_JOB = "fraudscale-assets"


def _binary(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `make prometheus` builds it")
    return str(path)


class LocalPushgateway(LocalProcess):
    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder, self.port = folder, port or free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = start_process(
            [_binary("pushgateway"), f"--web.listen-address={self.address}"],
            "the Pushgateway", lambda: port_answers("127.0.0.1", self.port), 30,
            log=self.folder / "pushgateway.log",
        )  # fmt: skip


def compressed(rules: str, factor: int) -> str:
    """The rule file with every duration (range selectors, `for:`) divided by `factor`, for
    tests that cannot wait minutes: 5m becomes 5s at 60. Durations are whole seconds, at
    least 1 s."""
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def shrink(match: re.Match[str]) -> str:
        value = int(match.group(2)) * seconds[match.group(3)]
        return f"{match.group(1)}{max(1, value // factor)}s{match.group(4)}"

    text = re.sub(r"(\[)(\d+)([smhd])(\]|:)", shrink, rules)
    return re.sub(r"(for: )(\d+)([smhd])(\s)", shrink, text)


class LocalPrometheus(LocalProcess):
    """Prometheus scraping `targets` (job -> host:port list) every `scrape_interval` with
    `rules`; the Pushgateway's job keeps the pushed labels (honor_labels)."""

    def __init__(
        self,
        folder: Path,
        targets: Mapping[str, Sequence[str]],
        rules: str,
        *,
        scrape_interval: str = "1s",
        port: int | None = None,
    ) -> None:
        self.folder, self.port = folder, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets, self.rules, self.interval = targets, rules, scrape_interval

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "rules.yml").write_text(self.rules)
        config = {
            "global": {
                "scrape_interval": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": list(addresses)}],
                    **({"honor_labels": True} if job == ASSETS_JOB else {}),
                }
                for job, addresses in self.targets.items()
            ],
        }
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = start_process(
            [
                _binary("prometheus"),
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            "Prometheus", self._ready, 60, log=self.folder / "prometheus.log",
        )  # fmt: skip

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a Prometheus HTTP API answer; ValueError with its error otherwise."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) of `expr` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def alert_states(self) -> dict[str, set[str]]:
        """Active alerts by name: the states (pending, firing) of their series."""
        out: dict[str, set[str]] = {}
        for alert in self.api("alerts")["alerts"]:
            out.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return out

    def metadata(self) -> dict[str, dict[str, str]]:
        """Every metric family the targets export: name -> {type, help}."""
        return {
            name: {"type": entries[0]["type"], "help": entries[0]["help"]}
            for name, entries in self.api("metadata").items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", action="append", default=[], help="REST host:port")
    parser.add_argument("--stream", action="append", default=[], help="worker web host:port")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--pushgateway-port", type=int, default=9091)
    parser.add_argument("--folder", type=Path, default=ROOT / "data" / "prometheus")
    args = parser.parse_args()
    gateway = LocalPushgateway(args.folder, args.pushgateway_port)
    gateway.start()
    targets = {"fraudscale-rest": args.rest, "fraudscale-stream": args.stream,
               ASSETS_JOB: [gateway.address]}  # fmt: skip
    prometheus = LocalPrometheus(
        args.folder, {job: t for job, t in targets.items() if t}, RULES.read_text(),
        scrape_interval="15s", port=args.port,
    )  # fmt: skip
    prometheus.start()
    print(f"Prometheus on {prometheus.url}, Pushgateway on http://{gateway.address}")
    print(f"(nightly figures: FRAUD_ASSETS_PUSHGATEWAY_URL={gateway.address})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        prometheus.stop()
        gateway.stop()


if __name__ == "__main__":
    main()

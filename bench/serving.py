"""REST serving: fraudscale's Litestar service against Seldon MLServer and a FastAPI service.

Every server runs alone, pinned to core 0 (`taskset -c 0`); wrk (Debian's) runs pinned to
core 1, one thread, at two concurrencies, on loopback. Same LightGBM model everywhere (ONNX
bundle for us and FastAPI, the native booster file for MLServer's LightGBM runtime).

- fraudscale /v1/score, full path: API-key check, JSON validation, card and merchant state
  from Redis (one MGET, states loaded from 12 days of history), the fraud_core features,
  cache lookup (a miss: every request has its own transaction_id), micro-batched inference.
- fraudscale /v1/score, cache hit: the same transaction again (a client's retry).
- fraudscale /v1/score, full path with micro-batching switched off: what batching gains.
- fraudscale /v1/score, full path with the rollout on: every decision to the decision log
  (a real Kafka broker), a challenger scoring 10 % of requests in shadow, a canary answering
  5 % of cards (the champion's model under other versions: the same cost per score). This
  server and the full path's run side by side and are measured in turns (`--rounds`, each
  row showing its median point), so the machine's drift does not land on one of them.
- fraudscale /v2/models/{name}/infer: an FP32 [1, 30] tensor (Open Inference Protocol).
- the ceiling: the same server settings and the same requests, a Litestar route that only
  decodes the body with msgspec and returns a constant (bench/peers/ceiling_app.py): what
  the framework and server allow before any scoring work.
- FastAPI + pydantic /score: validation, stateless features, inference; no state, no cache.
- MLServer 1.7.1 + mlserver-lightgbm, V2 infer of the same tensor, default settings and
  parallel_workers=0 (its best here). It runs from its own virtualenv (it needs uvloop 0.21),
  which this benchmark creates under the workdir the first time.

Redis and the Kafka broker stand for services on other machines: they run on wrk's core.

    uv run python -m bench.serving                 # 10 s per point
    uv run python -m bench.serving --seconds 4     # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import record_result
from bench.batch import train_model
from fraud_core.bundle import as_version
from fraud_core.features import N_FEATURES
from fraud_core.model_store import ModelStore
from fraud_core.online_store import load_history
from fraud_core.rollout import CANARY, CHALLENGER
from fraud_data.landing import read_landing
from fraud_devtools.kafka import LocalKafka
from fraud_devtools.processes import free_port, pin_process, start_process, stop_process
from fraud_devtools.redis_server import LocalRedis
from serving.controllers.inference import INPUT_NAME

console = Console()
PROJECT = Path(__file__).resolve().parent.parent
UNBATCHED = "fraudscale, batching off"
ROLLOUT = "fraudscale + log, 10% shadow, 5% canary"
CEILING = "ceiling: Litestar, decode only"
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop==0.21.0"]


@dataclass(frozen=True)
class Point:
    server: str
    path: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float


def median_points(points: list[Point]) -> list[Point]:
    """Each (server, path, concurrency)'s point of median throughput over the rounds, in
    first-run order."""
    rounds: dict[tuple[str, str, int], list[Point]] = {}
    for p in points:
        rounds.setdefault((p.server, p.path, p.concurrency), []).append(p)
    return [sorted(done, key=lambda p: p.rps)[len(done) // 2] for done in rounds.values()]


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> tuple[float, float, float]:
    (result,) = run_wrk_together([url], script, concurrency, seconds)
    return result


def run_wrk_together(
    urls: list[str], script: Path, concurrency: int, seconds: float
) -> list[tuple[float, float, float]]:
    """wrk against each url at the same time (req/s, p50 ms, p99 ms of each): servers that
    share a core are measured in the same seconds, so the machine's drift cannot favour one."""
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}",
               f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script)]  # fmt: skip
    runs = [
        subprocess.Popen([*command, url, "--", str(i)], stdout=subprocess.PIPE, text=True)
        for i, url in enumerate(urls)
    ]
    results = []
    for url, wrk in zip(urls, runs, strict=True):
        out, _ = wrk.communicate()
        if wrk.returncode:
            raise RuntimeError(f"wrk against {url} failed ({wrk.returncode})\n{out}")
        results.append(_wrk_result(url, out))
    return results


def _wrk_result(url: str, out: str) -> tuple[float, float, float]:
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed requests\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "87.50%" in the thread-stats table must not pass for the 50th percentile.
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return rps, p50, p99


def _lua_post(path: str, body: str | None = None, template: str | None = None,
              cards: list[str] | None = None) -> str:  # fmt: skip
    head = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    head += 'wrk.headers["X-API-Key"] = "bench"\n'
    if body is not None:
        return head + f"wrk.body = {json.dumps(body)}\nwrk.path = {json.dumps(path)}\n"
    assert template is not None
    assert cards is not None
    card_list = ",".join(json.dumps(c) for c in cards)
    return (
        head
        + f"""
local cards = {{{card_list}}}
local template = {json.dumps(template)}
-- Transaction ids unique across runs too: a later run must not hit an earlier one's cache.
local run = string.format("%d-%d", os.time(), math.floor(os.clock() * 1e6))
local n = 0
-- Servers measured at once share Redis (its score cache): their ids differ by wrk's argument.
init = function(args)
  run = run .. "-" .. (args[1] or "")
end
request = function()
  n = n + 1
  local card = cards[(n * 7919) % #cards + 1]
  local body = string.format(template, run, n, card, (n % 500) + 0.5)
  return wrk.format(nil, {json.dumps(path)}, nil, body)
end
"""
    )


@contextlib.contextmanager
def pinned(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    process = start_process(
        ["taskset", "-c", "0", *command], " ".join(command[:3]), ready, 120,
        log=log, env={**os.environ, **env},
    )  # fmt: skip
    try:
        yield
    finally:
        stop_process(process, 20)


def mlserver_env(work: Path) -> Path:
    venv = work / "mlserver-venv"
    if not (venv / "bin" / "mlserver").exists():
        uv = shutil.which("uv") or str(PROJECT / ".tools" / "bin" / "uv")
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", *MLSERVER_PINS],
            env={**os.environ, "VIRTUAL_ENV": str(venv)}, check=True,
        )  # fmt: skip
    return venv / "bin" / "mlserver"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/serving"))
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="turns of the full path and the rollout row (each row: its median point)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    work: Path = args.workdir.resolve()
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)

    model = train_model(work)
    store = ModelStore(run / "models")
    store.publish(model.bundle)
    bundle_path = store.root / "versions" / model.bundle.metadata.version / "model.onnx"
    name = model.bundle.metadata.name
    (run / "mlserver" / name).mkdir(parents=True)
    model.booster.save_model(str(run / "mlserver" / name / "model.txt"))
    (run / "mlserver" / name / "model-settings.json").write_text(
        json.dumps({"name": name, "implementation": "mlserver_lightgbm.LightGBMModel",
                    "parameters": {"uri": "./model.txt"}})
    )  # fmt: skip
    mlserver = mlserver_env(work)

    history = read_landing(work / "train_landing").sort_by("timestamp")
    cards = sorted(set(history.column("card_id").to_pylist()))[:3000]
    merchant = history.column("merchant_id")[0].as_py()
    template = (
        '{"transaction_id":"b-%s-%d","card_id":"%s","merchant_id":"' + merchant + '",'
        '"merchant_category":"electronics","amount":%.2f,"currency":"EUR","country":"DE",'
        '"channel":"ecom","timestamp":"2026-03-20T12:00:00Z"}'
    )
    same = template.replace("%s-%d", "1").replace("%s", cards[0]).replace("%.2f", "42.00")
    tensor = np.round(np.random.default_rng(1).random(N_FEATURES), 4).tolist()
    v2_body = json.dumps(
        {"inputs": [{"name": INPUT_NAME, "shape": [1, N_FEATURES], "datatype": "FP32",
                     "data": tensor}]}
    )  # fmt: skip
    scripts = {
        "distinct": _lua_post("/v1/score", template=template, cards=cards),
        "same": _lua_post("/v1/score", body=same),
        "v2": _lua_post(f"/v2/models/{name}/infer", body=v2_body),
        "fastapi": _lua_post("/score", template=template, cards=cards),
    }
    for key, text in scripts.items():
        (run / f"{key}.lua").write_text(text)

    points: list[Point] = []
    together: list[tuple[int, float]] = []
    """(concurrency, rollout on / off) of each turn with both servers loaded at once."""

    def measure(server: str, base: str, label: str, script: str) -> None:
        run_wrk(base, run / f"{script}.lua", 16, 2)  # warm-up
        for c in args.concurrency:
            rps, p50, p99 = run_wrk(base, run / f"{script}.lua", c, args.seconds)
            points.append(Point(server, label, c, rps, p50, p99))
            console.print(f"  {server:28} {label:28} c{c:<3} {rps:9,.0f} req/s  p99 {p99:.1f} ms")

    rollout_store = ModelStore(run / "models-rollout")
    rollout_store.publish(model.bundle)
    for version, role in (("canary", CANARY), ("shadow", CHALLENGER)):
        rollout_store.add(as_version(model.bundle, version))
        rollout_store.point_to(version, role, share=0.05 if role == CANARY else 0.0)
    redis = LocalRedis(run)
    redis.start()
    kafka = LocalKafka(run / "kafka")
    kafka.start()
    # Redis and the broker stand for services on other machines: on wrk's core, so the
    # server is alone on its own (the broker's JVM otherwise takes core 0 time from the
    # rollout row only).
    for process in (redis.process, kafka.process):
        assert process is not None
        pin_process(process.pid, "1")
    try:
        load_history(history, redis.url, model.bundle.metadata.contract.label_delay_us)
        port = free_port()
        env = {
            "FRAUD_SERVING_MODEL_STORE_DIR": str(store.root),
            "FRAUD_SERVING_REDIS_URL": redis.url,
            "FRAUD_SERVING_API_KEYS": "bench:score+infer",
            "FRAUD_SERVING_PORT": str(port),
            "FRAUD_SERVING_JSON_LOGS": "false",
        }
        base = f"http://127.0.0.1:{port}"
        # The same server with the rollout on: every decision to Kafka, a challenger scoring
        # 10 % of requests in shadow, a canary answering 5 % of cards. Both servers are up
        # together (an idle one costs nothing) and measured in turns, `--rounds` times, so
        # the machine's drift moves both rows alike; the table shows each one's median.
        rollout_port = free_port()
        rollout = {
            **env,
            "FRAUD_SERVING_MODEL_STORE_DIR": str(rollout_store.root),
            "FRAUD_SERVING_DECISION_LOG_BOOTSTRAP": kafka.bootstrap,
            "FRAUD_SERVING_SHADOW_SAMPLE": "0.1",
            "FRAUD_SERVING_PORT": str(rollout_port),
        }
        rollout_base = f"http://127.0.0.1:{rollout_port}"
        with (
            pinned([sys.executable, "-m", "serving.app"], env, base + "/v2/health/ready",
                   run / "fraudscale.log"),
            pinned([sys.executable, "-m", "serving.app"], rollout,
                   rollout_base + "/v2/health/ready", run / "fraudscale-rollout.log"),
        ):  # fmt: skip
            for _ in range(args.rounds):
                measure("fraudscale (Litestar)", base, "/v1/score full path", "distinct")
                measure(ROLLOUT, rollout_base, "/v1/score full path", "distinct")
                # And both loaded at once, sharing core 0: what the rollout costs, with the
                # machine's drift (2-3x within minutes here) landing on both alike.
                for c in args.concurrency:
                    (off, *_), (on, *_) = run_wrk_together(
                        [base, rollout_base], run / "distinct.lua", c, args.seconds
                    )
                    together.append((c, on / off))
                    console.print(f"  both at once, c{c}: {off:,.0f} / {on:,.0f} req/s")
            measure("fraudscale (Litestar)", base, "/v1/score cache hit", "same")
            measure("fraudscale (Litestar)", base, "V2 infer", "v2")
        # What micro-batching gains: the same server with it switched off.
        unbatched = {**env, "FRAUD_SERVING_BATCHING_ENABLED": "false"}
        with pinned([sys.executable, "-m", "serving.app"], unbatched, base + "/v2/health/ready",
                    run / "fraudscale-unbatched.log"):  # fmt: skip
            measure(UNBATCHED, base, "/v1/score full path", "distinct")
        # The ceiling: the same server settings, a route that only decodes the body.
        ceiling = {"FRAUD_SERVING_PORT": str(port)}
        with pinned([sys.executable, "-m", "bench.peers.ceiling_app"], ceiling,
                    base + "/v2/health/ready", run / "ceiling.log"):  # fmt: skip
            measure(CEILING, base, "/v1/score decode only", "distinct")
    finally:
        redis.kill()
        kafka.kill()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with pinned(
        [sys.executable, "-m", "uvicorn", "--factory", "bench.peers.fastapi_app:create_app",
         "--port", str(port),
         "--no-access-log", "--log-level", "warning"],
        {"BENCH_BUNDLE": str(bundle_path)}, base + "/docs", run / "fastapi.log",
    ):  # fmt: skip
        measure("FastAPI + pydantic (bare)", base, "/score", "fastapi")

    for label, workers in (("MLServer (default)", None), ("MLServer (parallel_workers=0)", 0)):
        port, grpc, metrics = free_port(), free_port(), free_port()
        settings: dict[str, object] = {"http_port": port, "grpc_port": grpc,
                                       "metrics_port": metrics}  # fmt: skip
        if workers is not None:
            settings["parallel_workers"] = workers
        (run / "mlserver" / "settings.json").write_text(json.dumps(settings))
        base = f"http://127.0.0.1:{port}"
        with pinned([str(mlserver), "start", str(run / "mlserver")], {},
                    base + "/v2/health/ready", run / "mlserver.log"):  # fmt: skip
            measure(label, base, "V2 infer", "v2")

    points = median_points(points)
    table = Table(title="serving: one server process on one core, wrk on the other, loopback")
    for column in ("server", "path", "conc.", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(p.server, p.path, str(p.concurrency), f"{p.rps:,.0f}", f"{p.p50_ms:.2f}",
                      f"{p.p99_ms:.2f}")  # fmt: skip
    console.print(table)

    def best(server: str, path: str) -> float:
        return max(p.rps for p in points if p.server.startswith(server) and p.path == path)

    def best_of(server: str, path: str) -> float:
        return max(p.rps for p in points if p.server == server and p.path == path)

    full = best_of("fraudscale (Litestar)", "/v1/score full path")
    ratios = {
        "full path vs MLServer best (V2)": full / best("MLServer", "V2 infer"),
        "full path vs bare FastAPI": full / best("FastAPI", "/score"),
        "cache hit vs bare FastAPI": best("fraudscale", "/v1/score cache hit")
        / best("FastAPI", "/score"),
        "V2 infer vs MLServer best V2": best("fraudscale", "V2 infer")
        / best("MLServer", "V2 infer"),
        "full path, micro-batching on vs off": full / best_of(UNBATCHED, "/v1/score full path"),
        "full path, rollout on vs off": best_of(ROLLOUT, "/v1/score full path") / full,
        "full path with rollout vs MLServer best (V2)": best_of(ROLLOUT, "/v1/score full path")
        / best("MLServer", "V2 infer"),
    }
    for c in args.concurrency:
        turns = [ratio for at, ratio in together if at == c]
        if turns:
            ratios[f"rollout on vs off, both loaded at once, c{c} (median turn)"] = (
                statistics.median(turns)
            )
    ceiling_rps = {p.concurrency: p.rps for p in points if p.server == CEILING}
    for p in points:
        if p.server == "fraudscale (Litestar)" and p.path == "/v1/score full path":
            ratios[f"full path vs ceiling at c{p.concurrency}"] = p.rps / ceiling_rps[p.concurrency]
    p99_c16 = [
        p.p99_ms for p in points
        if p.server == "fraudscale (Litestar)" and p.path == "/v1/score full path"
        and p.concurrency == 16
    ]  # fmt: skip
    for key, value in ratios.items():
        console.print(f"{key}: {value:.2f}x")
    console.print(f"full path p99 at c16: {p99_c16[0] if p99_c16 else float('nan'):.2f} ms")
    record_result("serving", {"points": [p.__dict__ for p in points], "ratios": ratios})


if __name__ == "__main__":
    main()

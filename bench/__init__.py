"""Benchmarks that run fraudscale and a peer side by side on the same data."""

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


def record_result(name: str, result: dict[str, Any]) -> Path:
    """Write a run's figures to bench/results/<name>.json, with the machine and the time."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    stamp = {
        "cpu_count": os.cpu_count(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path.write_text(json.dumps({**result, **stamp}, indent=2))
    return path

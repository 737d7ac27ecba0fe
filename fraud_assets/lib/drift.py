"""Score drift: the population stability index of a day's scores against a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PSI_ALERT = 0.2
"""Above this PSI the score distribution has shifted enough to investigate (industry rule)."""
_BINS = 10
_EPSILON = 1e-6


def score_baseline(scores: np.ndarray) -> dict[str, list[float]]:
    """Decile edges of the baseline scores and the share of baseline scores in each bin."""
    edges = np.unique(np.quantile(scores.astype(np.float64), np.linspace(0, 1, _BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def psi(baseline: dict[str, list[float]], scores: np.ndarray) -> float:
    edges = np.asarray(baseline["edges"])
    expected = np.asarray(baseline["shares"]) + _EPSILON
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    actual = counts / max(counts.sum(), 1) + _EPSILON
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def save_baseline(path: Path, baseline: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline))


def load_baseline(path: Path) -> dict[str, list[float]] | None:
    return json.loads(path.read_text()) if path.exists() else None

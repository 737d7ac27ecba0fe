"""The rollout verdict: champion, canary and challenger compared on a day's decision log.

Without labels: decisions, alert rate, score distribution against the champion's (PSI),
agreement with the champion on the same transactions (the challenger scores the champion's
transactions in shadow; canary cards are answered by the canary alone, so it has none), and
the lag from transaction to decision. Once the labels of the day's transactions have arrived
(the label delay after the newest of them): precision, recall and alerts per confirmed fraud,
with 95 % Wilson intervals.

The canary is over budget when its alert rate exceeds `budget` times the champion's (alerts
cost investigators' time, and a canary must not flood them); it is better when, with labels
complete, its precision and recall both reach the champion's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraud_assets.lib.drift import psi, score_baseline
from fraud_core.rollout import CANARY, CHAMPION, ROLES

ONLINE = ("rest", "stream")


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class RoleStats:
    paths: str
    """"online" (REST and stream) or "batch"."""
    role: str
    model_version: str
    decisions: int
    alerts: int
    alert_rate: float
    psi_vs_champion: float | None
    agreement_with_champion: float | None
    lag_p50_s: float
    lag_p99_s: float
    labelled: int = 0
    frauds: int = 0
    true_alerts: int = 0
    precision: float | None = None
    precision_ci: tuple[float, float] | None = None
    recall: float | None = None
    recall_ci: tuple[float, float] | None = None
    alerts_per_fraud: float | None = None


@dataclass(frozen=True)
class Verdict:
    day: str
    stats: list[RoleStats]
    labels_complete: bool
    labels_complete_at_us: int
    """When the labels of the day's newest transaction are due (event time + label delay)."""
    budget: float
    canary_version: str | None = None
    canary_over_budget: bool = False
    canary_better: bool | None = None
    """None until labels are complete (and both roles saw fraud)."""
    notes: list[str] = field(default_factory=list)

    def role(self, paths: str, role: str) -> RoleStats | None:
        return next((s for s in self.stats if s.paths == paths and s.role == role), None)

    def markdown(self) -> str:
        head = (
            "| paths | role | model | decisions | alert rate | PSI | agreement | lag p99 s "
            "| labelled | precision (95 % CI) | recall (95 % CI) | alerts / fraud |"
        )
        lines = [head, "|" + "---|" * 12]
        for s in self.stats:
            lines.append(
                f"| {s.paths} | {s.role} | {s.model_version} | {s.decisions:,} "
                f"| {s.alert_rate:.3%} | {_num(s.psi_vs_champion)} "
                f"| {_pct(s.agreement_with_champion)} | {s.lag_p99_s:.3g} | {s.labelled:,} "
                f"| {_ci(s.precision, s.precision_ci)} | {_ci(s.recall, s.recall_ci)} "
                f"| {_num(s.alerts_per_fraud)} |"
            )
        lines.append("")
        lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None or ci is None:
        return ""
    return f"{value:.2%} ({ci[0]:.2%}-{ci[1]:.2%})"


def judge(
    day: str,
    decisions: pa.Table,
    labels: pa.Table,
    *,
    labels_known_until_us: int,
    label_delay_us: int,
    budget: float = 1.5,
    min_decisions: int = 200,
) -> Verdict:
    """The verdict on a day's decisions (DECISION_SCHEMA rows of every path); `labels` has
    transaction_id and is_fraud (null: not labelled), known up to `labels_known_until_us`."""
    paths = pc.if_else(pc.is_in(decisions.column("path"), pa.array(ONLINE)), "online", "batch")
    decisions = decisions.append_column("paths", paths)
    newest = pc.max(decisions.column("event_time_us")).as_py() if decisions.num_rows else 0
    due = int(newest or 0) + label_delay_us
    complete = decisions.num_rows > 0 and due <= labels_known_until_us
    truth = _truth(decisions, labels, labels_known_until_us - label_delay_us)
    stats = []
    for group in ("online", "batch"):
        rows = decisions.filter(pc.equal(decisions.column("paths"), group))
        rows = _first_per_id(rows)
        champion = rows.filter(pc.equal(rows.column("role"), CHAMPION))
        for role in ROLES:
            mine = rows.filter(pc.equal(rows.column("role"), role))
            if mine.num_rows:
                stats.append(_stats(group, role, mine, champion, truth))
    verdict = Verdict(day, stats, complete, due, budget)
    return _decide(verdict, min_decisions)


def _truth(decisions: pa.Table, labels: pa.Table, labelled_before_us: int) -> dict[str, bool]:
    """Known labels of the decided transactions: those whose label time has passed."""
    ids = pc.unique(decisions.column("transaction_id"))
    known = labels.filter(pc.is_in(labels.column("transaction_id"), ids))
    known = known.filter(pc.is_valid(known.column("is_fraud")))
    times = decisions.select(["transaction_id", "event_time_us"]).group_by("transaction_id")
    event = times.aggregate([("event_time_us", "min")])
    due = dict(zip(event.column(0).to_pylist(), event.column(1).to_pylist(), strict=True))
    return {
        t: bool(f)
        for t, f in zip(
            known.column("transaction_id").to_pylist(),
            known.column("is_fraud").to_pylist(),
            strict=True,
        )
        if due.get(t, labelled_before_us + 1) <= labelled_before_us
    }


def _first_per_id(rows: pa.Table) -> pa.Table:
    """One record per decision id (REST and stream deciding one transaction with one model in
    one role write one id)."""
    if rows.num_rows == 0:
        return rows
    index = pa.table({"id": rows.column("decision_id"), "i": np.arange(rows.num_rows)})
    first = index.group_by("id").aggregate([("i", "min")]).column("i_min")
    return rows.take(np.sort(first.to_numpy()))


def _stats(
    group: str, role: str, mine: pa.Table, champion: pa.Table, truth: dict[str, bool]
) -> RoleStats:
    scores = mine.column("score").to_numpy()
    alerted = np.asarray(mine.column("decision").to_pylist()) == "alert"
    lag = (
        mine.column("decision_time_us").to_numpy() - mine.column("event_time_us").to_numpy()
    ) / 1e6
    psi_value = agreement = None
    if role != CHAMPION and champion.num_rows:
        psi_value = psi(score_baseline(champion.column("score").to_numpy()), scores)
        theirs = dict(
            zip(
                champion.column("transaction_id").to_pylist(),
                champion.column("decision").to_pylist(),
                strict=True,
            )
        )
        pairs = [
            (d, theirs[t])
            for t, d in zip(
                mine.column("transaction_id").to_pylist(),
                mine.column("decision").to_pylist(),
                strict=True,
            )
            if t in theirs
        ]
        if pairs:
            agreement = sum(a == b for a, b in pairs) / len(pairs)
    ids = mine.column("transaction_id").to_pylist()
    known = [(truth[t], a) for t, a in zip(ids, alerted, strict=True) if t in truth]
    frauds = sum(f for f, _ in known)
    alerts_known = sum(a for _, a in known)
    true_alerts = sum(f and a for f, a in known)
    return RoleStats(
        paths=group,
        role=role,
        model_version=str(mine.column("model_version")[0]),
        decisions=mine.num_rows,
        alerts=int(alerted.sum()),
        alert_rate=float(alerted.mean()),
        psi_vs_champion=psi_value,
        agreement_with_champion=agreement,
        lag_p50_s=float(np.percentile(lag, 50)),
        lag_p99_s=float(np.percentile(lag, 99)),
        labelled=len(known),
        frauds=frauds,
        true_alerts=true_alerts,
        precision=true_alerts / alerts_known if alerts_known else None,
        precision_ci=wilson(true_alerts, alerts_known) if alerts_known else None,
        recall=true_alerts / frauds if frauds else None,
        recall_ci=wilson(true_alerts, frauds) if frauds else None,
        alerts_per_fraud=alerts_known / true_alerts if true_alerts else None,
    )


def _decide(verdict: Verdict, min_decisions: int) -> Verdict:
    champion, canary = verdict.role("online", CHAMPION), verdict.role("online", CANARY)
    notes = []
    if canary is None:
        notes.append("no canary decided on this day")
        return replace(verdict, notes=notes)
    over = bool(
        champion is not None
        and canary.decisions >= min_decisions
        and canary.alert_rate > verdict.budget * champion.alert_rate
    )
    if over and champion is not None:
        notes.append(
            f"canary {canary.model_version} alerts on {canary.alert_rate:.3%} of its cards, over "
            f"{verdict.budget:g}x the champion's {champion.alert_rate:.3%}: abort"
        )
    elif canary.decisions < min_decisions:
        notes.append(f"canary has {canary.decisions} decisions, fewer than {min_decisions}")
    elif champion is not None and canary.alert_rate * verdict.budget < champion.alert_rate:
        notes.append(
            f"canary {canary.model_version} alerts on {canary.alert_rate:.3%} of its cards, "
            f"under 1/{verdict.budget:g} of the champion's {champion.alert_rate:.3%}: it may "
            "miss fraud; its recall is known once the labels arrive"
        )
    better = None
    if not verdict.labels_complete:
        notes.append("labels are not complete yet: precision and recall are partial")
    elif champion is not None and canary.frauds and champion.frauds:
        better = bool(
            not over
            and (canary.precision or 0.0) >= (champion.precision or 0.0)
            and (canary.recall or 0.0) >= (champion.recall or 0.0)
        )
        notes.append(
            f"labelled: canary precision {canary.precision or 0:.2%} recall "
            f"{canary.recall or 0:.2%} against the champion's {champion.precision or 0:.2%} / "
            f"{champion.recall or 0:.2%}: {'promote' if better else 'keep the champion'}"
        )
    return replace(
        verdict, canary_version=canary.model_version, canary_over_budget=over,
        canary_better=better, notes=notes,
    )  # fmt: skip

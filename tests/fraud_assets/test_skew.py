"""The skew check's comparison and its causes, on reference features (no Spark: the Spark
side is tested in test_graph.py against real REST decisions)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fraud_assets.lib.decisions import decisions_table
from fraud_assets.lib.skew import compare, markdown, served
from fraud_core.features import (
    FEATURE_NAMES,
    HOUR_US,
    MODEL_INPUT_COLUMNS,
    arrow_columns,
    feature_matrix,
)
from fraud_core.rollout import CHAMPION, SHADOW, decision_records
from fraud_core.state import replay


def test_each_differing_row_gets_the_cause_that_explains_it(history: pa.Table, contract) -> None:  # type: ignore[no-untyped-def]
    day = history.slice(history.num_rows - 400)
    columns = {**arrow_columns(history), **replay(history)}
    x = feature_matrix(columns, contract)[-400:]
    offline = pa.table(
        {"transaction_id": day.column("transaction_id"),
         **{c: np.asarray(columns[c])[-400:] for c in MODEL_INPUT_COLUMNS}}
    )  # fmt: skip
    events = np.asarray(columns["timestamp_us"])[-400:]
    decided = events + 50_000  # every decision 50 ms after its transaction...
    served_x = x.copy()
    j = FEATURE_NAMES.index
    served_x[0, j("merchant_fraud_rate_7d")] += 0.25  # a label folded at another time
    served_x[1, j("card_txn_count_24h")] += 1  # a bug
    served_x[2, j("card_amount_sum_1h")] += 7  # decided two hours late
    decided[2] += 2 * HOUR_US
    served_x[3, :] = 0  # scored without state
    degraded = decision_records(
        path="rest", role=CHAMPION, model_name="m", model_version="1", threshold=0.5,
        transaction_ids=day.column("transaction_id").to_pylist()[3:4],
        card_ids=day.column("card_id").to_pylist()[3:4], event_times_us=events[3:4],
        features=served_x[3:4], scores=np.zeros(1), decided_at_us=int(decided[3]),
        degraded=True,
    )  # fmt: skip
    records = []
    for i in (0, 1, 2, *range(4, 400)):
        records += decision_records(
            path="stream", role=CHAMPION, model_name="m", model_version="1", threshold=0.5,
            transaction_ids=[day.column("transaction_id")[i].as_py()],
            card_ids=[day.column("card_id")[i].as_py()], event_times_us=events[i : i + 1],
            features=served_x[i : i + 1], scores=np.zeros(1), decided_at_us=int(decided[i]),
        )  # fmt: skip
    # A shadow record repeats a served vector: not compared twice.
    shadow = decision_records(
        path="stream", role=SHADOW, model_name="m", model_version="1", threshold=0.5,
        transaction_ids=[day.column("transaction_id")[1].as_py()],
        card_ids=[day.column("card_id")[1].as_py()], event_times_us=events[1:2],
        features=served_x[1:2] + 5, scores=np.zeros(1), decided_at_us=int(decided[1]),
    )  # fmt: skip
    log = decisions_table([*records, *degraded, *shadow])
    report = compare(served(log), offline, {"1": contract}, late_after_us=HOUR_US)
    assert report.rows == 400
    assert report.rows_by_path == {"rest": 1, "stream": 399}
    assert report.served_degraded == 1
    causes = dict(
        zip(report.mismatched.column("transaction_id").to_pylist(),
            report.mismatched.column("cause").to_pylist(), strict=True)
    )  # fmt: skip
    ids = day.column("transaction_id").to_pylist()
    assert causes[ids[0]] == "label_timing"
    assert causes[ids[1]] == "unexplained"
    assert causes[ids[2]] == "late_or_out_of_order"
    assert causes[ids[3]] == "degraded"
    assert set(causes) == set(ids[:4])
    by_name = {f.name: f for f in report.features}
    assert by_name["card_txn_count_24h"].mismatches >= 1
    assert by_name["merchant_fraud_rate_7d"].max_abs_delta >= 0.25 - 1e-6
    text = markdown(report)
    assert "| unexplained | 1 |" in text
    assert "card_txn_count_24h" in text


def test_a_transaction_decided_after_a_later_one_of_its_card_is_out_of_order(
    history: pa.Table, contract
) -> None:  # type: ignore[no-untyped-def]
    columns = {**arrow_columns(history), **replay(history)}
    x = feature_matrix(columns, contract)
    cards = history.column("card_id").to_numpy(zero_copy_only=False)
    busy = np.flatnonzero(cards == cards[-1])[-2:]  # the card's last two transactions
    assert len(busy) == 2
    events = np.asarray(columns["timestamp_us"])[busy]
    served_x = x[busy].copy()
    served_x[0, FEATURE_NAMES.index("card_txn_count_7d")] += 1  # it saw the later one
    offline = pa.table(
        {"transaction_id": history.column("transaction_id").take(pa.array(busy)),
         **{c: np.asarray(columns[c])[busy] for c in MODEL_INPUT_COLUMNS}}
    )  # fmt: skip
    later_first = [1, 0]
    records = []
    for k, i in enumerate(later_first):
        records += decision_records(
            path="stream", role=CHAMPION, model_name="m", model_version="1", threshold=0.5,
            transaction_ids=[offline.column("transaction_id")[i].as_py()],
            card_ids=[cards[busy[i]]], event_times_us=events[i : i + 1],
            features=served_x[i : i + 1], scores=np.zeros(1),
            decided_at_us=int(events[1]) + 1000 * (k + 1),
        )  # fmt: skip
    report = compare(served(decisions_table(records)), offline, {"1": contract},
                     late_after_us=HOUR_US)  # fmt: skip
    assert report.mismatched.column("cause").to_pylist() == ["late_or_out_of_order"]

"""The stream's batch logic without Kafka: redelivery is idempotent, bad input is a dead letter."""

from __future__ import annotations

import copy

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraud_core.features import HOUR_US
from fraud_core.inference import Scorer
from fraud_core.model_store import Served
from fraud_core.schema import timestamps_us
from fraud_core.state import (
    CardState,
    MerchantState,
    add_label,
    end_states,
    merchant_features,
    replay,
)
from fraud_devtools.stream_workers import label_records, transaction_records
from streaming.scoring import (
    CardEntry,
    MerchantEntry,
    Record,
    apply_labels,
    decode_card_entry,
    encode_entry,
    entry_risk,
    score_transactions,
)

pytestmark = pytest.mark.unit


def no_labels(merchant_id: str, hour: int) -> list[float]:
    """Every merchant's risk before any label."""
    return entry_risk(None, hour)


def as_records(pairs: list[tuple[bytes, bytes]], topic: str = "tx") -> list[Record]:
    return [Record(k, v, topic, 0, offset) for offset, (k, v) in enumerate(pairs)]


def test_a_redelivered_batch_scores_the_same_and_changes_no_state(
    history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    table = history.slice(0, 400).drop_columns(["is_fraud"])
    records = as_records(transaction_records(table))
    scorer = Scorer(trained.bundle)
    cards: dict[str, CardEntry] = {}

    def entry(card: str) -> CardEntry:
        return copy.deepcopy(cards.get(card, CardEntry(-1, CardState())))

    first = score_transactions(records, Served(scorer), entry, no_labels)
    cards.update({c: e for c, (_, e) in first.cards.items()})
    before = {c: encode_entry(e) for c, e in cards.items()}
    # After a crash, Kafka redelivers the tail from the last committed offset.
    again = score_transactions(records[250:], Served(scorer), entry, no_labels)
    assert [s.score for s in again.scores] == [s.score for s in first.scores[250:]]
    assert {c: encode_entry(e) for c, (_, e) in again.cards.items()} == {
        c: before[c] for c in again.cards
    }
    replayed: dict[str, CardState] = {}
    replay(table, replayed)
    assert {c: decode_card_entry(b).state for c, b in before.items()} == replayed


def test_a_transaction_redelivered_after_later_ones_were_applied_gets_its_first_score(
    long_history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    """The crash the changelog allows: the worker applied (and wrote) later transactions of
    a card, 8 days on, which trimmed its state, then died before committing. The redelivered
    transactions are scored from their first features, not from the trimmed state, until
    their offsets are committed; then nothing of them is kept."""
    table = long_history.drop_columns(["is_fraud"])
    busiest = max(pc.value_counts(table["card_id"]).to_pylist(), key=lambda c: c["counts"])[
        "values"
    ]
    card = table.filter(pc.equal(table["card_id"], busiest))
    records = as_records(transaction_records(card))
    scorer = Scorer(trained.bundle)
    entries: dict[str, CardEntry] = {}

    def entry(card_id: str) -> CardEntry:
        return copy.deepcopy(entries.get(card_id, CardEntry(-1, CardState())))

    def run(batch: list[Record], committed: int = 0) -> list[float]:
        done = score_transactions(
            batch, Served(scorer), entry, no_labels, committed=lambda p: committed
        )
        entries.update({c: e for c, (_, e) in done.cards.items()})
        return [s.score for s in done.scores]

    first = run(records)
    (state,) = entries.values()
    assert state.state.ts[0] > timestamps_us(card["timestamp"])[0]  # trimmed: the bug's setting
    again = run(records[: len(records) // 2])  # redelivered after all were applied
    assert again == first[: len(records) // 2]
    cut_state = replay_states(card)
    assert entries[busiest].state == cut_state
    assert [a.offset for a in entries[busiest].uncommitted] == list(range(len(records)))
    run(records[-1:], committed=len(records) - 1)  # a later write after the commit
    assert [a.offset for a in entries[busiest].uncommitted] == [len(records) - 1]


def replay_states(table: pa.Table) -> CardState:
    cards, _ = end_states(table.append_column("is_fraud", pa.array([False] * table.num_rows)))
    (state,) = cards.values()
    return state


def test_labels_are_applied_once_per_offset(history: pa.Table) -> None:
    records = as_records(label_records(history.slice(0, 300)), "labels")
    merchants: dict[str, MerchantEntry] = {}

    def entry(merchant: str) -> MerchantEntry:
        return copy.deepcopy(merchants.get(merchant, MerchantEntry(-1, MerchantState())))

    first = apply_labels(records, entry)
    merchants.update({m: e for m, (_, e) in first.merchants.items()})
    assert first.labels == 300
    again = apply_labels(records[100:], entry)
    assert again.labels == 0
    assert {m: e for m, (_, e) in again.merchants.items()} == {
        m: merchants[m] for m in again.merchants
    }


def test_undecodable_invalid_and_misrouted_records_become_dead_letters(
    history: pa.Table, trained
) -> None:  # type: ignore[no-untyped-def]
    (good,) = transaction_records(history.slice(0, 1))
    records = as_records(
        [(b"c", b"{"), (b"c", b'{"card_id": "c"}'), (b"other-card", good[1]), good]
    )
    batch = score_transactions(
        records, Served(Scorer(trained.bundle)), lambda c: CardEntry(-1, CardState()),
        no_labels,
    )  # fmt: skip
    assert len(batch.scores) == 1
    assert [d.record.offset for d in batch.dead] == [0, 1, 2]
    assert batch.dead[0].error.malformed
    assert "required" in batch.dead[1].error.reason
    assert batch.dead[2].error.field == "card_id"
    headers = dict(batch.dead[2].headers())
    assert headers["source.offset"] == b"2"
    assert b"must equal" in headers["error.reason"]


def test_a_remembered_merchant_risk_follows_the_entry_as_labels_arrive() -> None:
    """The worker remembers a merchant's risk per (entry, hour): a label changes the entry,
    and the next ask gives the new state's risk, not the remembered one."""
    hour = 500_000
    entry = MerchantEntry(-1, MerchantState())
    risks = []
    for fraud in (True, False, True):
        risks.append(entry_risk(encode_entry(entry), hour))
        assert risks[-1] == merchant_features(entry.state, hour * HOUR_US)
        add_label(entry.state, (hour - 2) * HOUR_US, fraud)
    assert entry_risk(None, hour) == risks[0]  # no entry: no labels
    assert len({tuple(r) for r in risks}) == 3

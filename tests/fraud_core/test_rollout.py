"""Roles and the decision log's contract: sticky canary cards, deterministic decision ids, the
store's role pointers, and what the holder refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from fraud_core.features import feature_matrix
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelHolder, ModelStore, Served
from fraud_core.rollout import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    COMPILED,
    SHADOW,
    RolloutPlan,
    add_decision_log_messages,
    below_share,
    bucket,
    canary_cards,
    decision_id,
    decision_log_messages,
    decision_messages,
    decision_records,
    decode_decision,
    encode_decision,
    feature_vector,
    in_canary,
)
from fraud_core.schema import Transaction
from fraud_core.scoring import (
    role_decisions,
    sampled,
    score_by_role,
    shadow_inputs,
    stateful_rows,
    transaction_matrix,
)
from fraud_core.state import CardState, MerchantState
from fraud_native import Messages, record_batches
from tests.conftest import model_columns, relabelled

pytestmark = pytest.mark.unit


def transactions_of(rows: pa.Table) -> list[Transaction]:
    """The history's rows as the transactions the paths score (without their label)."""
    return [
        Transaction(**{k: v for k, v in r.items() if k != "is_fraud"}) for r in rows.to_pylist()
    ]


def test_a_card_keeps_its_role_and_the_share_is_what_was_asked() -> None:
    cards = [f"card-{i}" for i in range(20_000)]
    chosen = [in_canary(c, 0.1) for c in cards]
    assert 0.09 < np.mean(chosen) < 0.11
    assert chosen == [in_canary(c, 0.1) for c in cards]  # the same answer every time
    # Growing the share only adds cards: none leaves the canary.
    wider = [in_canary(c, 0.2) for c in cards]
    assert all(w for c, w in zip(chosen, wider, strict=True) if c)
    assert not any(in_canary(c, 0.0) for c in cards)
    # A fixed value (XXH3-64 of the id), so every process agrees: not a salted hash.
    assert bucket("card-1") == 0.8412095990413079


def test_a_batch_picks_the_cards_and_samples_the_keys_one_at_a_time_would() -> None:
    """The batch forms (a stream batch's canary cards, its shadow sample) pick what a bucket
    per key picks: the same transactions on every path and in every batch size."""
    keys = [f"t-{i}" for i in range(20_000)]
    for share in (0.0, 1e-4, 0.05, 0.1, 0.5, 0.999999, 1.0):
        assert canary_cards(keys, share) == [in_canary(k, share) for k in keys]
        assert below_share(keys, share) == [i for i, k in enumerate(keys) if bucket(k) < share]
    assert 0.09 < len(below_share(keys, 0.1)) / len(keys) < 0.11


def test_decision_ids_are_deterministic_and_distinguish_model_and_role() -> None:
    assert decision_id("t1", "v1", CHAMPION) == decision_id("t1", "v1", CHAMPION)
    # A fixed value (XXH3-128 of the three), so every path and process writes the same id.
    assert decision_id("t1", "v1", CHAMPION) == "96dcdb7287f7d437e1b2c5e28b5655bb"
    ids = {decision_id("t1", v, r) for v in ("v1", "v2") for r in (CHAMPION, CANARY, SHADOW)}
    assert len(ids) == 6


def test_records_carry_the_float32_vector_and_round_trip(trained, history) -> None:  # type: ignore[no-untyped-def]
    scorer = Scorer(trained.bundle)
    rows = history.slice(0, 5)
    x = feature_matrix(model_columns(rows), scorer.contract)
    transactions = transactions_of(rows)
    records = decision_records(
        **role_decisions("rest", CHAMPION, scorer, transactions, x, scorer.score(x))
    )
    back = [decode_decision(encode_decision(r)) for r in records]
    assert back == records
    assert np.array_equal(np.asarray([feature_vector(r) for r in back]), x)
    assert {r.feature_version for r in back} == {trained.bundle.metadata.feature_version}


def test_decision_messages_are_each_record_keyed_by_its_transaction(trained, history) -> None:  # type: ignore[no-untyped-def]
    """The topic's values are encoded for a whole send in one call and split by line: a
    transaction id with a newline or quotes must still give one message per record."""
    scorer = Scorer(trained.bundle)
    rows = history.slice(0, 4)
    x = feature_matrix(model_columns(rows), scorer.contract)
    ids = ["plain", 'with "quotes"', "with\nnewline", "with\u2028separator"]
    transactions = [
        msgspec.structs.replace(t, transaction_id=i)
        for t, i in zip(transactions_of(rows), ids, strict=True)
    ]
    records = decision_records(
        **role_decisions("rest", CHAMPION, scorer, transactions, x, scorer.score(x))
    )
    messages = decision_messages(records)
    assert [key for key, _ in messages] == [i.encode() for i in ids]
    assert [decode_decision(value) for _, value in messages] == records
    assert decision_messages([]) == []


def _random_text(rng: np.random.Generator) -> str:
    """Ids as a client might send them: plain, or with quotes, backslashes, control
    characters, DEL, non-ASCII letters, line separators and astral-plane characters."""
    alphabet = ["a", "Z", "7", "-", '"', "\\", "\n", "\t", "\r", "\b", "\f", "\x00", "\x1f",
                "\x7f", "é", "\u2028", "中", "\U0001f4b3", " "]  # fmt: skip
    if rng.random() < 0.5:
        return f"t-{rng.integers(10**12)}"
    return "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))


def _random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 scores, with the ones a float's text makes hard: tiny and huge, exact
    powers of ten, zeros of both signs, the threshold itself, NaN and the infinities."""
    pool = np.array([0.0, -0.0, 1.0, 0.5, 1e-5, 1e-6, 3.0994415e-06, 1e16, 1e17, 1e-45,
                     3.4e38, np.nan, np.inf, -np.inf, 0.1, 0.25], dtype=np.float32)  # fmt: skip
    scores = rng.random(n).astype(np.float32) ** rng.integers(1, 30)
    special = rng.random(n) < 0.3
    scores[special] = rng.choice(pool, size=int(special.sum()))
    return scores


def _random_decisions(rng: np.random.Generator) -> dict[str, Any]:
    n = int(rng.integers(0, 40))
    return {
        "path": str(rng.choice(["rest", "stream", "batch"])),
        "role": str(rng.choice([CHAMPION, CANARY, SHADOW])),
        "model_name": _random_text(rng),
        "model_version": _random_text(rng),
        "threshold": float(rng.choice([0.5, 0.1, 1e-5, 0.123456789, 1.0, 0.25])),
        "transaction_ids": [_random_text(rng) for _ in range(n)],
        "card_ids": [_random_text(rng) for _ in range(n)],
        "event_times_us": rng.integers(-(2**62), 2**62, size=n).tolist(),
        "features": (rng.standard_normal((n, 7)) * 10.0 ** rng.integers(-40, 38)).astype(
            np.float32
        ),
        "scores": _random_scores(rng, n),
        "decided_at_us": int(rng.integers(0, 2**62)),
        "degraded": bool(rng.random() < 0.5),
    }


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_decision_messages_equal_the_specification(seed: int) -> None:
    """`decision_log_messages` (fraud_native, compiled) makes the same bytes as the
    specification, `decision_messages(decision_records(...))`, on random batches."""
    assert COMPILED, "fraud_native is not installed: `make install` builds it (needs cargo)"
    rng = np.random.default_rng(seed)
    for _ in range(50):
        fields = _random_decisions(rng)
        compiled = decision_log_messages(**fields)
        specified = decision_messages(decision_records(**fields))
        assert compiled == specified


@pytest.mark.parametrize("seed", range(4))
def test_decisions_gathered_in_a_compiled_buffer_become_the_same_record_batches(
    seed: int,
) -> None:
    """The decision log's send with fraud_native (`Outbox.add_decisions`): decision batches
    made straight into one `fraud_native.Messages` (float32 scores by the compiled call,
    others by the specification) hold the specification's messages in order, and become the
    record batches `record_batches` makes of those messages, each to its key's partition."""
    rng = np.random.default_rng(seed)
    for _ in range(10):
        gathered, specified = Messages(), []
        for _ in range(int(rng.integers(0, 6))):
            fields = _random_decisions(rng)
            if rng.random() < 0.2:
                fields["scores"] = fields["scores"].astype(np.float64)
            add_decision_log_messages(gathered, **fields)
            specified += decision_messages(decision_records(**fields))
        assert len(gathered) == len(specified)
        assert gathered.pairs() == specified
        count, max_bytes = int(rng.integers(1, 13)), int(rng.choice([300, 16384, 512 * 1024]))
        timestamp_ms, transactional = int(rng.integers(0, 2**41)), bool(rng.random() < 0.3)
        ours = gathered.record_batches(count, timestamp_ms, max_bytes, transactional)
        theirs = record_batches(
            [k for k, _ in specified], [v for _, v in specified], [-1] * len(specified),
            count, timestamp_ms, max_bytes, transactional,
        )  # fmt: skip
        assert [(p, b.record_count(), b._build()) for p, b in ours] == [
            (p, b.record_count(), b._build()) for p, b in theirs
        ]


def test_a_batch_the_compiled_buffer_cannot_take_leaves_it_as_it_was() -> None:
    """A batch that fails halfway (an id no UTF-8 can carry, after good ones) adds none of
    its messages: the decision log counts those decisions as lost and keeps the others."""
    rng = np.random.default_rng(7)
    good = _random_decisions(rng)
    assert len(good["transaction_ids"]) > 1
    gathered = Messages()
    add_decision_log_messages(gathered, **good)
    before = gathered.pairs()
    bad = {**good, "transaction_ids": [*good["transaction_ids"][:-1], "t-\ud800"]}
    with pytest.raises(UnicodeEncodeError):
        add_decision_log_messages(gathered, **bad)
    assert gathered.pairs() == before


def test_the_store_keeps_one_pointer_per_role(tmp_path: Path, trained, second_model) -> None:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path)
    store.publish(trained.bundle)
    store.add(second_model.bundle)
    assert store.plan() == RolloutPlan(champion="1")
    store.point_to("2", CANARY, share=0.25)
    store.point_to("2", CHALLENGER)
    assert store.plan() == RolloutPlan(champion="1", canary="2", canary_share=0.25, challenger="2")
    with pytest.raises(ValueError, match="share"):
        store.point_to("2", CANARY, share=0.0)
    store.clear(CANARY)
    assert store.plan() == RolloutPlan(champion="1", challenger="2")
    with pytest.raises(ValueError, match="replaced, not removed"):
        store.clear(CHAMPION)


def test_the_holder_serves_every_role_and_refuses_a_canary_with_another_label_delay(
    tmp_path: Path, trained, second_model
) -> None:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path)
    store.publish(trained.bundle)
    store.add(second_model.bundle)
    store.point_to("2", CANARY, share=0.5)
    store.point_to("2", CHALLENGER)
    holder = ModelHolder(store)
    assert holder.refresh()
    served = holder.served
    assert served is not None
    assert served.champion.version == "1"
    assert served.canary is not None
    assert served.canary.version == "2"
    assert served.shadow is not None
    assert served.shadow.version == "2"
    roles = {served.for_card(f"c{i}")[0] for i in range(200)}
    assert roles == {CHAMPION, CANARY}
    other = relabelled(second_model.bundle, trained.bundle.metadata.contract.label_delay_us * 2)
    store.add(other)
    store.point_to(other.metadata.version, CANARY, share=0.5)
    assert holder.refresh()
    assert holder.served is not None
    assert holder.served.canary is None  # refused, the champion answers every card
    assert holder.served.champion.version == "1"
    assert "label delay" in holder.last_error


def test_the_challenger_reads_the_answering_models_inputs(trained, second_model, history) -> None:  # type: ignore[no-untyped-def]
    """With the challenger's contract the answering models' own, its inputs are taken from
    their matrices (champion and canary parts put back in order) instead of a second feature
    matrix: they must be what its own matrix would have been."""
    champion, candidate = Scorer(trained.bundle), Scorer(second_model.bundle)
    served = Served(champion, canary=candidate, canary_share=0.5, shadow=candidate)
    assert served.shadow_shares_contract
    rows = history.slice(0, 40)
    transactions = transactions_of(rows)
    stateful = stateful_rows(transactions, [CardState()] * len(rows), [MerchantState()] * len(rows))
    parts = score_by_role(served, transactions, stateful)
    assert {p.role for p in parts} == {CHAMPION, CANARY}
    sample = sampled(transactions, 0.5)
    own = transaction_matrix(
        [transactions[i] for i in sample], [stateful[i] for i in sample], candidate.contract
    )
    assert np.array_equal(shadow_inputs(served, transactions, stateful, parts, sample), own)
    alone = Served(champion, shadow=candidate)
    (part,) = score_by_role(alone, transactions, stateful)
    assert np.array_equal(shadow_inputs(alone, transactions, stateful, [part], sample), own)

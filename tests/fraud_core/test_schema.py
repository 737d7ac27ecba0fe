import math

import msgspec
import pyarrow as pa
import pytest

from fraud_core.schema import (
    SchemaError,
    Transaction,
    decode_json,
    split_valid,
    to_micros,
    transactions_to_arrow,
)
from tests.conftest import SAMPLE_TRANSACTION, utc

pytestmark = pytest.mark.unit

GOOD = {**SAMPLE_TRANSACTION, "amount": 12.5, "timestamp": "2026-01-05T10:00:00Z"}


def test_a_valid_transaction_decodes_with_a_utc_timestamp() -> None:
    txn = decode_json(msgspec.json.encode(GOOD), Transaction)
    assert txn.amount == 12.5
    assert txn.timestamp_us == to_micros(utc(2026, 1, 5, 10))


def test_the_kept_timestamp_belongs_to_its_own_transaction() -> None:
    txn = decode_json(msgspec.json.encode(GOOD), Transaction)
    assert txn.timestamp_us == txn.timestamp_us == to_micros(utc(2026, 1, 5, 10))
    later = msgspec.structs.replace(txn, timestamp=utc(2026, 1, 6, 10))
    assert later.timestamp_us == to_micros(utc(2026, 1, 6, 10))
    assert later != txn
    assert msgspec.json.encode(txn) == msgspec.json.encode(GOOD)  # not a field on the wire


def test_an_unseen_category_is_valid() -> None:
    txn = decode_json(
        msgspec.json.encode({**GOOD, "merchant_category": "space_travel"}), Transaction
    )
    assert txn.merchant_category == "space_travel"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"amount": -1}, "amount", ">= 0.0"),
        ({"amount": 5e6}, "amount", "<= 1000000.0"),
        ({"amount": "12"}, "amount", "Expected `float`, got `str`"),
        ({"card_id": ""}, "card_id", "length >= 1"),
        ({"timestamp": "2026-01-05T10:00:00"}, "timestamp", "timezone"),
        ({"timestamp": "yesterday"}, "timestamp", "Invalid RFC3339"),
        ({"channel": None}, "channel", "got `null`"),
    ],
)
def test_invalid_fields_are_named_with_a_reason(change: dict, field: str, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        decode_json(msgspec.json.encode({**GOOD, **change}), Transaction)
    assert info.value.field == field
    assert reason in info.value.reason


def test_a_missing_field_is_named() -> None:
    payload = {k: v for k, v in GOOD.items() if k != "merchant_id"}
    with pytest.raises(SchemaError) as info:
        decode_json(msgspec.json.encode(payload), Transaction)
    assert info.value.field == "merchant_id"
    assert "missing" in info.value.reason


def test_malformed_json_is_a_schema_error_not_a_crash() -> None:
    with pytest.raises(SchemaError, match="malformed"):
        decode_json(b'{"amount": ', Transaction)


def test_nan_amount_is_refused() -> None:
    with pytest.raises(SchemaError) as info:
        decode_json(b'{"amount": NaN}', Transaction)
    assert "malformed" in str(info.value)  # JSON has no NaN literal


def test_bad_rows_are_split_off_with_their_first_reason() -> None:
    txn = decode_json(msgspec.json.encode(GOOD), Transaction)
    table = transactions_to_arrow([txn, txn, txn, txn])
    amount = pa.array([12.5, -3.0, math.nan, 1.0])
    card = pa.array(["c1", "c2", "c3", ""])
    table = table.set_column(4, "amount", amount).set_column(1, "card_id", card)
    valid, rejected = split_valid(table)
    assert valid.num_rows == 1
    assert rejected.column("reason").to_pylist() == [
        "amount: negative",
        "amount: not a finite number",
        "card_id: empty string",
    ]

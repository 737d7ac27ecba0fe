"""The tables: fraud_core card and merchant states, MessagePack-encoded with the last input
offset applied (streaming.scoring.CardEntry / MerchantEntry).

The card windows are sliding windows over exact event times ([t - w, t) in microseconds),
which Faust's tumbling/hopping windowed tables cannot express, so each entry holds the
card's recent transactions and the fraud_core reference implementation evaluates the windows.

Entries are written once per batch (`write_entry`), outside Faust's per-event context, so the
changelog partition is given explicitly: the partition of the input record, which is the
partition Faust restores the entry from when that input partition is assigned (and, in the
RocksDB store, the partition database the entry is kept in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.types import AppT, TableT

from fraud_core.outbox import Outbox
from streaming.faust_overrides import get_table_entry, set_table_entry
from streaming.settings import CARD_TABLE, MERCHANT_TABLE, StreamSettings


@dataclass(frozen=True)
class Tables:
    card_to_state: TableT[bytes, bytes]
    """Partitioned like the transactions topic (keyed by card_id): each worker holds its
    cards."""
    merchant_to_risk: TableT[bytes, bytes]
    """Global: a transaction on any worker needs its merchant's risk, whoever applied the
    label."""


def declare_tables(app: AppT, settings: StreamSettings) -> Tables:
    """The tables, in the store `settings` names; their changelog topics get its topic
    settings (StreamSettings.topic_config)."""
    common: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "extra_topic_configs": settings.topic_config(),
    }
    if options := settings.table_options():
        common["options"] = options
    return Tables(
        app.Table(
            CARD_TABLE,
            help="card_id -> CardEntry: the card's transactions in the last 7 days.",
            **common,
        ),
        app.GlobalTable(
            MERCHANT_TABLE,
            help="merchant_id -> MerchantEntry: labels counted per hour of label time.",
            **common,
        ),
    )


def write_entry(
    outbox: Outbox, table: TableT[bytes, bytes], partition: int, key: str, value: bytes
) -> None:
    """Set `key` in the worker's store and queue it for the changelog partition of its input.

    Through an outbox, not Faust's table writes, so a batch's changelog records reach the
    broker before its outputs are sent (streaming.checkpoint)."""
    raw_key = key.encode()
    changelog = set_table_entry(table, raw_key, value, partition)
    outbox.add(changelog, raw_key, value, partition=partition)


def read_entry(table: TableT[bytes, bytes], key: str) -> bytes | None:
    """The encoded entry of `key` in the worker's store of `table` (None: none yet)."""
    return get_table_entry(table, key.encode())

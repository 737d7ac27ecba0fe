"""The data contract a model learns from its training days: vocabularies by frequency."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from fraud_core.features import CATEGORICAL_COLUMNS, DataContract

DEFAULT_VOCABULARY_SIZE = 64


def learn_contract(
    table: pa.Table, label_delay_us: int, size: int = DEFAULT_VOCABULARY_SIZE
) -> DataContract:
    """Each categorical column's `size` most frequent values on `table` (ties by value, so
    the same data gives the same codes), and the label delay the training features used."""
    vocabularies = {}
    for column in CATEGORICAL_COLUMNS:
        counts = pc.value_counts(pc.drop_null(table.column(column))).to_pylist()
        ranked = sorted(counts, key=lambda c: (-c["counts"], c["values"]))
        vocabularies[column] = tuple(str(c["values"]) for c in ranked[:size])
    return DataContract(vocabularies=vocabularies, label_delay_us=label_delay_us)

"""Process-wide settings of the serving and stream processes."""

from __future__ import annotations

import gc
import logging

from fraud_core import rollout

YOUNG_THRESHOLD = 10_000
"""Container objects allocated (net of those freed) between two young collections; Python's
default is 700."""


def freeze_start_up_heap() -> None:
    """Move every object alive now (the model, the libraries, the app's own structures, which
    live as long as the process) out of the collector's reach: a full collection then walks
    only what was allocated since, instead of stalling every request or batch in flight for
    tens of milliseconds (measured in the stream worker: 56-79 ms pauses for about 100,000
    objects, one every 8-13 s). Call once, when start-up is done.

    Also collect the young generation after `YOUNG_THRESHOLD` net allocations, not 700: at
    700 a collection came every ~10 ms under load and caught each request's and batch's
    objects in flight, promoting them to the older generations, whose collections followed
    (two REST servers under the same load for ~45 s, `gc.callbacks`: at 700, 3,401 young,
    308 middle and 27 full collections, 1.1 s; at 10,000, 44, 3 and 1, 0.19 s;
    docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def report_native(log: logging.Logger) -> bool:
    """Say at start-up whether fraud_native (the `native` extra) is installed: without it the
    decision log's messages and the Kafka record batches are made in Python, correct and
    several times slower (an image built without its wheel, a source install without the
    extra, or a build that does not load). Returns whether it is: what fraud_core.rollout
    found when it imported it (fraud_core.outbox imports it the same way)."""
    if not rollout.COMPILED:
        log.warning(
            "fraud_native is not installed: decision-log messages and Kafka record batches "
            "are made in Python (slower); install the `native` extra"
        )
        return False
    log.info("fraud_native: decision-log messages and Kafka record batches are compiled")
    return True

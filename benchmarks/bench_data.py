"""Build the 12-column benchmark table (mixed types, awkward text) deterministically."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WORDS = [
    "alpha",
    "Ωμέγα",
    "東京",
    "naïve",
    "café",
    "señor",
    "Straße",
    "данные",
    "🚀 launch",
    'quote "this"',
    "a, b, c",
    "line\nbreak",
    "=SUM(A1)",
    "+1 555",
    "-dash",
    "@user",
    "https://example.com/x?a=1&b=2",
    "plain",
    "tab\tinside",
    "zero",
]
_CATEGORIES = ["retail", "wholesale", "online", "partner", "internal", "ä-category", "類別"]
_EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def build_table(rows: int, seed: int = 42) -> pa.Table:
    """Return a `rows`-row table of ids, unicode/quoted/multi-line text, numbers, bools, times."""
    rng = np.random.default_rng(seed)
    words = np.array(_WORDS, dtype=object)
    idx = np.arange(rows, dtype=np.int64)

    w1 = words[rng.integers(0, len(words), rows)]
    w2 = words[rng.integers(0, len(words), rows)]
    name = pa.array(w1.astype(str))
    name = pc.binary_join_element_wise(name, pa.array(w2.astype(str)), " ")
    # One description in 50 is long, so wrapping and truncation paths run too.
    desc_base = pc.binary_join_element_wise(
        pa.array(words[rng.integers(0, len(words), rows)].astype(str)),
        pa.array(idx).cast(pa.string()),
        ", item ",
    )
    long_mask = pa.array(rng.random(rows) < 0.02)
    desc = pc.if_else(long_mask, pc.binary_repeat(desc_base, 12), desc_base)
    desc = pc.if_else(pa.array(rng.random(rows) < 0.05), pa.nulls(rows, pa.string()), desc)

    amount = rng.normal(1000, 250, rows).round(2)
    amount_mask = rng.random(rows) < 0.1
    ratio = rng.random(rows)
    active = rng.random(rows) < 0.7
    active_mask = rng.random(rows) < 0.03
    created = _EPOCH_US + idx * 7_919_000 + rng.integers(0, 1_000_000, rows)
    updated = created + rng.integers(0, 86_400_000_000, rows)
    updated_mask = rng.random(rows) < 0.2

    return pa.table(
        {
            "id": pa.array(idx + 1),
            "external_id": pc.binary_join_element_wise(
                "EXT-", pa.array(rng.integers(10**9, 10**10, rows)).cast(pa.string()), ""
            ),
            "name": name,
            "description": desc,
            "category": pa.array(
                np.array(_CATEGORIES, dtype=object)[idx % len(_CATEGORIES)].astype(str)
            ),
            "quantity": pa.array(rng.integers(-5, 10_000, rows)),
            "amount": pa.array(amount, mask=amount_mask),
            "ratio": pa.array(ratio),
            "active": pa.array(active, mask=active_mask),
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
            "updated_at": pa.array(updated, pa.timestamp("us", tz="UTC"), mask=updated_mask),
            "day": pa.array((created // 86_400_000_000).astype(np.int32), pa.date32()),
        }
    )

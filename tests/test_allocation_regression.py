"""The allocation's rows are pinned, byte for byte, on seeded random bills: speed-ups must not move a cent.

The digests were taken from the engine before its 10M-row optimization (commit 375d691) on the same
inputs; any change to the rows (an amount, a label, a share, a row more or less) changes them.
"""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta

import polars as pl
import pytest

from models.allocation import allocate
from models.config import FeatureConfig
from tests.test_allocation import FEATURES, T0, charge, charges, random_config, usage, use

RULE_SETS = {
    "keep": {"idle": "keep", "unused_commitment": "keep", "overhead": "proportional", "token_driver": "tokens"},
    "spread": {"idle": "spread", "unused_commitment": "spread", "overhead": "even", "token_driver": "priced_tokens"},
    "fixed": {"idle": "spread", "unused_commitment": "keep", "overhead": "fixed", "token_driver": "requests"},
}
DIGESTS = {
    "keep": "a081a29847192d8acea9c0c42796b78b6b2d3d278407115ed70a56a9c126d5f3",
    "spread": "5c6da06de152c8918cd3c2bbbe3c255c51ea7898e362d81c7a5f2528e5581ccf",
    "fixed": "95b9e3754784f6dfa32d3cf7a2d73f818185a4ad6ed807e0fc93a2e201779773",
}


def seeded_inputs(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """About 300 charges over three days (hourly, daily, multi-day, beyond the month) and their usage."""
    rng = random.Random(seed)
    bill = charges(
        *(
            charge(
                f"c{i:04d}",
                str(rng.randint(-500_000, 5_000_000) / 10 ** rng.choice([2, 6, 10])),
                billed=str(rng.choice([0, rng.randint(-500_000, 5_000_000) / 10**4])),
                start=T0 + timedelta(hours=rng.randint(0, 71)),
                hours=rng.choice([1, 1, 1, 1, 24, 48, 1000]),
                source=rng.choice(["aws", "aws", "openai"]),
                tags=rng.choice([None, '{"cluster":"prod"}', '{"feature":"chat","environment":"staging"}']),
                resource=f"i-{rng.randint(0, 4)}",
                category=rng.choice(["Usage", "Usage", "Usage", "Tax"]),
                status=rng.choice([None, None, None, "Unused"]),
                account=rng.choice(["acct", "team-docs"]),
            )
            for i in range(300)
        )
    )
    used = usage(
        *(
            use(
                T0 + timedelta(hours=rng.randint(0, 71)),
                rng.choice(FEATURES),
                deployment=d,
                provider=d if d == "openai" else "vllm",
                model=rng.choice(["gpt-4.1", "gpt-4.1-mini", "other"]),
                env=rng.choice(["production", "staging", None]),
                tokens=(tokens := rng.randint(0, 10**6)),
                output=tokens // 7,
                cached=tokens // 3,
                gpu=str(rng.randint(0, 3600 * 10**6) / 10**6),
                requests=1 + tokens % 5,
            )
            for _ in range(250)
            for d in ("vllm", "openai")
        )
    )
    return bill, used


def digest(rows: pl.DataFrame) -> str:
    """SHA-256 of the rows as CSV, in their documented sort order."""
    return hashlib.sha256(rows.write_csv().encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_rows_are_unchanged_on_seeded_random_bills(name: str) -> None:
    bill, used = seeded_inputs(seed=sorted(RULE_SETS).index(name))
    rules = RULE_SETS[name] | {"direct": True}
    rows = allocate(bill, used, random_config(rules), {f: FeatureConfig() for f in FEATURES})
    assert rows.height > 800
    assert digest(rows) == DIGESTS[name]

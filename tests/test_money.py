from __future__ import annotations

from decimal import Decimal

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from models.money import from_units, split_units, to_units


def split(amount: int, weights: list[int]) -> list[int]:
    frame = pl.DataFrame(
        {
            "g": [1] * len(weights),
            "amount": [amount] * len(weights),
            "w": weights,
            "k": [f"{i:03d}" for i in range(len(weights))],
        }
    )
    out = split_units(frame, group="g", amount="amount", weight="w", order="k", out="part").collect().sort("k")
    return [int(v) for v in out["part"]]


def test_three_way_split_gives_the_extra_unit_to_the_first_key() -> None:
    assert split(100, [1, 1, 1]) == [34, 33, 33]


def test_negative_amounts_split_like_positive_ones() -> None:
    assert split(-7, [3, 1]) == [-5, -2]


def test_largest_remainder_beats_key_order() -> None:
    # 10 × (1/6, 5/6) = 1.67, 8.33 → the larger remainder (0.67) takes the leftover unit.
    assert split(10, [1, 5]) == [2, 8]


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=-(10**20), max_value=10**20),
    weights=st.lists(st.integers(min_value=1, max_value=10**15), min_size=1, max_size=12),
)
def test_parts_add_back_and_stay_within_one_unit_of_exact(amount: int, weights: list[int]) -> None:
    parts = split(amount, weights)
    assert sum(parts) == amount
    total = sum(weights)
    for part, w in zip(parts, weights, strict=True):
        exact = Decimal(abs(amount)) * w / total
        assert abs(Decimal(abs(part)) - exact) < 1


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(8))))
def test_result_does_not_depend_on_row_order(order: list[int]) -> None:
    weights = [3, 1, 4, 1, 5, 9, 2, 6]
    frame = pl.DataFrame({"g": [1] * 8, "amount": [1001] * 8, "w": weights, "k": [f"k{i}" for i in range(8)]})
    shuffled = frame[order]
    a = split_units(frame, group="g", amount="amount", weight="w", order="k", out="p").collect().sort("k")
    b = split_units(shuffled, group="g", amount="amount", weight="w", order="k", out="p").collect().sort("k")
    assert a["p"].to_list() == b["p"].to_list()


def test_units_round_trip_exactly() -> None:
    values = pl.Series("v", ["0.000000000001", "-123456789.123456789123", "0"]).cast(pl.Decimal(38, 12))
    frame = pl.DataFrame({"v": values}).with_columns(u=to_units(pl.col("v"))).with_columns(back=from_units(pl.col("u")))
    assert frame["u"].to_list() == [1, -123456789123456789123, 0]
    assert frame["back"].to_list() == [Decimal("0.000000000001"), Decimal("-123456789.123456789123"), Decimal("0")]

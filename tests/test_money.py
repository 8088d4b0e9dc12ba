from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.money import (
    MAX_UNITS,
    SplitOverflow,
    check_amounts,
    from_units,
    split_units,
    to_units,
    units_to_money,
)


def split(amount: int, weights: list[int]) -> list[int]:
    frame = pl.DataFrame(
        {
            "g": [1] * len(weights),
            "amount": [amount] * len(weights),
            "w": weights,
            "k": [f"{i:03d}" for i in range(len(weights))],
        },
        schema_overrides={"amount": pl.Int128, "w": pl.Int128},
    )
    out = split_units(frame, group="g", amount="amount", weight="w", order="k", out="part").collect().sort("k")
    return [int(v) for v in out["part"]]


def test_three_way_split_rounds_each_running_total() -> None:
    # running totals 33.33, 66.67, 100 round to 33, 67, 100: parts 33, 34, 33
    assert split(100, [1, 1, 1]) == [33, 34, 33]


def test_negative_amounts_split_like_positive_ones() -> None:
    # -5.25 rounds half up to -5, then -7: parts -5, -2
    assert split(-7, [3, 1]) == [-5, -2]


def test_the_larger_fraction_gets_the_unit() -> None:
    # 10 × (1/6, 5/6) = 1.67, 8.33 → 2 and 8
    assert split(10, [1, 5]) == [2, 8]


def test_zero_weight_parts_get_nothing() -> None:
    assert split(10, [0, 3, 0, 2]) == [0, 6, 0, 4]


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
        assert abs(Decimal(part) - Decimal(amount) * w / total) < 1


@settings(max_examples=40, deadline=None)
@given(amount=st.integers(min_value=10**25, max_value=10**29), scale=st.integers(min_value=90, max_value=100))
def test_huge_weights_are_scaled_but_parts_still_add_up_exactly(amount: int, scale: int) -> None:
    weights = [2**scale + 7, 3 * 2**scale, 2**scale // 5]  # amount × total weight > 2**124: scaled down
    parts = split(amount, weights)
    assert sum(parts) == amount
    total = sum(weights)
    for part, w in zip(parts, weights, strict=True):
        # off its exact share by at most about amount²/2**122 units
        assert abs(Decimal(part) - Decimal(amount) * w / total) <= Decimal(amount) ** 2 / 2**121 + 1


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(8))))
def test_result_does_not_depend_on_row_order(order: list[int]) -> None:
    weights = [3, 1, 4, 1, 5, 9, 2, 6]
    frame = pl.DataFrame({"g": [1] * 8, "amount": [1001] * 8, "w": weights, "k": [f"k{i}" for i in range(8)]})
    shuffled = frame[order]
    a = split_units(frame, group="g", amount="amount", weight="w", order="k", out="p").collect().sort("k")
    b = split_units(shuffled, group="g", amount="amount", weight="w", order="k", out="p").collect().sort("k")
    assert a["p"].to_list() == b["p"].to_list() == [97, 32, 129, 33, 161, 291, 64, 194]


def test_units_round_trip_exactly() -> None:
    values = pl.Series("v", ["0.000000000001", "-123456789.123456789123", "0"]).cast(pl.Decimal(38, 12))
    frame = pl.DataFrame({"v": values}).with_columns(u=to_units(pl.col("v"))).with_columns(back=from_units(pl.col("u")))
    assert frame["u"].to_list() == [1, -123456789123456789123, 0]
    assert frame["back"].to_list() == [Decimal("0.000000000001"), Decimal("-123456789.123456789123"), Decimal("0")]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-MAX_UNITS, MAX_UNITS)), max_size=40), st.integers(0, 5))
def test_units_to_money_reads_the_units_as_amounts(units: list[int | None], offset: int) -> None:
    """The buffer handed over as Decimal(38, 12) is the amounts of ``from_units``: nulls, signs, slices, chunks."""
    series = pl.Series("u", units, dtype=pl.Int128)
    chunked = pl.concat([series, series.slice(offset)], rechunk=False)
    for given_units in (series, series.slice(offset), chunked):
        expected = given_units.to_frame().select(from_units(pl.col("u"))).to_series()
        money = units_to_money(given_units)
        assert money.dtype == pl.Decimal(38, 12)
        assert money.name == "u"
        assert money.to_list() == expected.to_list()


def test_units_to_money_exact_values() -> None:
    money = units_to_money(pl.Series("part", [1, -123456789123456789123, None, MAX_UNITS], dtype=pl.Int128))
    assert money.to_list() == [
        Decimal("0.000000000001"),
        Decimal("-123456789.123456789123"),
        None,
        Decimal(f"{MAX_UNITS}e-12"),
    ]


def test_an_amount_too_large_to_split_exactly_is_refused() -> None:
    check_amounts(MAX_UNITS - 1)
    with pytest.raises(SplitOverflow, match="too large to split exactly"):
        check_amounts(MAX_UNITS)


def test_units_to_money_falls_back_to_arithmetic_for_another_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """A polars exporting Int128 under another Arrow format gets ``from_units``, and the export is released."""
    import models.money as money

    monkeypatch.setattr(money, "_POLARS_INT128", b"not-polars-int128")
    result = money.units_to_money(pl.Series("part", [5, None, -2], dtype=pl.Int128))
    assert result.dtype == pl.Decimal(38, 12)
    assert result.to_list() == [Decimal("0.000000000005"), None, Decimal("-0.000000000002")]

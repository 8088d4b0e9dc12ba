"""Exact money: decimal amounts as integer units, and splits whose parts add back to the whole."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from models.focus import MONEY, MONEY_SCALE

UNIT = Decimal(1).scaleb(-MONEY_SCALE)  # the smallest stored amount, 1e-12


def to_units(expr: pl.Expr) -> pl.Expr:
    """Decimal(38, 12) money → exact Int128 count of 1e-12 units."""
    return (expr.cast(MONEY) * 10**MONEY_SCALE).cast(pl.Int128)


def from_units(expr: pl.Expr) -> pl.Expr:
    """Inverse of ``to_units``; exact."""
    return expr.cast(pl.Decimal(38, 0)).cast(MONEY) / 10**MONEY_SCALE


def split_units(
    parts: pl.DataFrame | pl.LazyFrame,
    *,
    group: str,
    amount: str,
    weight: str,
    order: str,
    out: str,
) -> pl.LazyFrame:
    """Largest-remainder split of each group's ``amount`` (Int128 units) by integer ``weight``.

    Every row of a group carries the group's whole amount; the result column ``out`` holds the
    row's part. Parts of a group sum to the amount exactly, are proportional to the weights up to
    one unit, and ties in the remainder go to the smallest ``order`` value, so the result does not
    depend on row order. Negative amounts (credits) split like positive ones. Groups whose total
    weight is 0 must be handled by the caller (they would divide by zero).
    """
    lf = parts.lazy()
    a = pl.col(amount).cast(pl.Int128)
    w = pl.col(weight).cast(pl.Int128)
    total_w = w.sum().over(group)
    magnitude = a.abs()
    floor = (magnitude * w) // total_w
    rem = (magnitude * w) % total_w
    lf = lf.with_columns(floor.alias("_floor"), rem.alias("_rem"))
    leftover = magnitude.first().over(group) - pl.col("_floor").sum().over(group)
    # Rank rows by remainder (largest first), ties by ``order``: the first ``leftover`` get one unit more.
    lf = lf.sort([group, "_rem", order], descending=[False, True, False])
    rank = pl.int_range(1, pl.len() + 1, dtype=pl.Int128).over(group)
    sign = pl.when(a < 0).then(pl.lit(-1, pl.Int128)).otherwise(pl.lit(1, pl.Int128))
    return lf.with_columns(((pl.col("_floor") + (rank <= leftover).cast(pl.Int128)) * sign).alias(out)).drop(
        "_floor", "_rem"
    )

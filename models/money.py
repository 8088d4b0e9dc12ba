"""Exact money: decimal amounts as integer units, and splits whose parts add back to the whole.

The split rule is *cumulative rounding*: order the parts of an amount ``A`` (fixed, documented order),
let ``C_i`` be the running total of the weights up to and including part ``i`` and ``W`` the total
weight; part ``i`` is ``round(A·C_i/W) − round(A·C_{i−1}/W)`` (half up). The parts telescope to
``round(A·W/W) − round(0) = A`` exactly, each part is within one unit (1e-12) of its exact
proportional share, and the result depends only on the weights and the order of the parts, never on
the order of the input rows. Because a part needs only its own running totals, a split needs no
per-charge sorting or ranking: that is what lets the allocation run row by row on tens of millions
of parts.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pyarrow as pa  # imported up front: in a batch it would hold the lock every worker needs
from pyarrow.cffi import ffi

from models.focus import MONEY, MONEY_SCALE

UNIT = Decimal(1).scaleb(-MONEY_SCALE)  # the smallest stored amount, 1e-12
PRODUCT_LIMIT = 2**124
"""Amount × weight must stay below this so that ``2·A·C + W`` fits in a signed 128-bit integer."""
MAX_UNITS = 2**100
"""Largest amount one charge row may carry (about 1.3e18 USD): far beyond any bill, checked anyway."""


class SplitOverflow(ValueError):
    """An amount too large to split exactly in 128-bit integers."""


def to_units(expr: pl.Expr) -> pl.Expr:
    """Decimal(38, 12) money → exact Int128 count of 1e-12 units."""
    return expr.cast(MONEY).to_physical()  # the Decimal(38, 12) representation is this integer


def from_units(expr: pl.Expr) -> pl.Expr:
    """Inverse of ``to_units``; exact (a multiplication by the unit, no division)."""
    # Decimal(38, 0) × Decimal(38, 12) is already Decimal(38, 12): no rescaling pass (twice as fast).
    return (expr.cast(pl.Decimal(38, 0)) * pl.lit(UNIT, MONEY)).cast(MONEY)


def units_to_money(units: pl.Series) -> pl.Series:
    """``from_units`` of a whole Int128 Series without a pass over its values (same result).

    Decimal(38, 12) stores each amount as its Int128 count of units, so the Series' buffer already is
    the Decimal column: it is handed over through the Arrow C data interface (pyarrow's own struct
    definitions, ``pyarrow.cffi``), relabelled as Arrow's ``decimal128(38, 12)``, and read back without a
    copy. Converting tens of millions of parts with ``from_units`` costs more than splitting them. A
    polars that exports Int128 differently gets ``from_units``.
    """
    if units.n_chunks() > 1:  # each chunk is handed over on its own: no copy into one buffer first
        return pl.concat([units_to_money(chunk) for chunk in units.get_chunks()], rechunk=False)
    schema, array = ffi.new("struct ArrowSchema*"), ffi.new("struct ArrowArray*")
    schema_at, array_at = int(ffi.cast("uintptr_t", schema)), int(ffi.cast("uintptr_t", array))
    units._s._export_arrow_to_c(array_at, schema_at)
    if ffi.string(schema.format) != _POLARS_INT128:
        schema.release(schema), array.release(array)
        return units.to_frame().select(from_units(pl.col(units.name))).to_series()
    schema.format = _DECIMAL_FORMAT  # the exporter's release frees its own copy, not this pointer
    return pl.Series(units.name, pa.Array._import_from_c(array_at, schema_at))


_POLARS_INT128 = b"_pli128"  # polars' format string for Int128 (Arrow has no 128-bit integer type)
_DECIMAL_FORMAT = ffi.new("char[]", f"d:38,{MONEY_SCALE}".encode())


def boundary(amount: pl.Expr, upto: pl.Expr, total: pl.Expr) -> pl.Expr:
    """``round(amount · upto / total)``, half up, in 128-bit integers (any sign of ``amount``; total > 0)."""
    a = amount.cast(pl.Int128)
    return (a * (upto * 2) + total) // (total * 2)


def cumulative_part(amount: pl.Expr, before: pl.Expr, upto: pl.Expr, total: pl.Expr) -> pl.Expr:
    """The part of ``amount`` between running weights ``before`` and ``upto`` out of ``total`` (Int128)."""
    return boundary(amount, upto, total) - boundary(amount, before, total)


def weight_divisor(max_amount: pl.Expr, total: pl.Expr) -> pl.Expr:
    """Divide weights by this (per group) so that ``max_amount × total`` stays under ``PRODUCT_LIMIT``.

    1 for real bills against an hour or a day of usage; only huge weights (e.g. a month of
    price-weighted tokens) against a large charge get scaled down. Parts still add up exactly; a part
    moves from its exact share by at most about amount²/2**122 units: 4e-12 USD for an 18M USD
    charge, 3e-7 USD for a billion.
    """
    estimate = max_amount.cast(pl.Float64) * total.cast(pl.Float64) / float(PRODUCT_LIMIT // 4)
    return pl.when(estimate >= 1).then(estimate.ceil().cast(pl.Int128) + 1).otherwise(pl.lit(1, pl.Int128))


def check_amounts(max_abs_units: int) -> None:
    if max_abs_units >= MAX_UNITS:
        raise SplitOverflow(f"a charge of {Decimal(max_abs_units) * UNIT} is too large to split exactly")


def split_units(
    parts: pl.DataFrame | pl.LazyFrame,
    *,
    group: str,
    amount: str,
    weight: str,
    order: str | list[str],
    out: str,
) -> pl.LazyFrame:
    """Cumulative-rounding split of each group's ``amount`` (Int128 units) by non-negative integer ``weight``.

    Every row of a group carries the group's whole amount; ``out`` holds the row's part. Parts of a
    group sum to the amount exactly; ``order`` (unique within a group) fixes which part is first.
    Groups whose total weight is 0 must be handled by the caller (they would divide by zero).
    """
    order_by = [order] if isinstance(order, str) else order
    w = pl.col(weight).cast(pl.Int128)
    magnitude = pl.col(amount).cast(pl.Int128).abs()
    lf = parts.lazy().sort([group, *order_by])
    lf = lf.with_columns(_w=w // weight_divisor(magnitude.max().over(group), w.sum().over(group)))
    lf = lf.with_columns(_upto=pl.col("_w").cum_sum().over(group), _total=pl.col("_w").sum().over(group))
    part = cumulative_part(pl.col(amount), pl.col("_upto") - pl.col("_w"), pl.col("_upto"), pl.col("_total"))
    return lf.with_columns(part.alias(out)).drop("_w", "_upto", "_total")

"""Billing periods: calendar months in UTC, the partition of every bill."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class BillingPeriod:
    """A calendar month ``[start, end)`` in UTC, keyed ``YYYY-MM``."""

    key: str

    @classmethod
    def containing(cls, moment: datetime) -> BillingPeriod:
        return cls(f"{moment:%Y-%m}")

    @property
    def start(self) -> datetime:
        y, m = map(int, self.key.split("-"))
        return datetime(y, m, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        s = self.start
        return datetime(s.year + (s.month == 12), s.month % 12 + 1, 1, tzinfo=UTC)

    @property
    def previous(self) -> BillingPeriod:
        s = self.start
        return BillingPeriod(f"{s.year - (s.month == 1)}-{(s.month - 2) % 12 + 1:02d}")

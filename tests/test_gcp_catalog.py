"""Cloud Billing Catalog API prices: REST transport against a local server, pagination, and the disk cache."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from connectors.base import SourceError
from connectors.gcp_catalog import CatalogPrices, SkuPrice, Tier, money

FIXTURES = Path(__file__).parent / "fixtures" / "gcp"
COMPUTE = "6F81-5844-456A"
STORAGE = "95FF-2EF5-5EA1"
NOW = datetime(2025, 11, 4, 12, tzinfo=UTC)


@dataclass
class FakeCatalog:
    """``GET /v1/services/{service}/skus`` (Cloud Billing Catalog API) serving the pages in tests/fixtures/gcp."""

    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def pages(self, service: str) -> list[dict[str, Any]]:
        files = sorted(FIXTURES.glob(f"catalog_{service}_page*.json"))
        return [json.loads(f.read_text()) for f in files]

    def respond(self, path: str) -> tuple[int, dict[str, Any]]:
        url = urlparse(path)
        match = re.fullmatch(r"/v1/services/([0-9A-F-]+)/skus", url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append({"service": match.group(1) if match else None, **query})
        if self.status != 200:
            message = "Cloud Billing API has not been used in project 123 before or it is disabled."
            return self.status, {"error": {"code": self.status, "message": message, "status": "PERMISSION_DENIED"}}
        if not match:
            return 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}
        pages = self.pages(match.group(1))
        token = query.get("pageToken", "")
        tokens = [""] + [p["nextPageToken"] for p in pages if "nextPageToken" in p]
        return 200, pages[tokens.index(token)] if pages else {"skus": []}

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeCatalog]:
        fake = cls(**kwargs)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = fake.respond(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        fake.url = f"http://127.0.0.1:{server.server_port}"
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()


def catalog(fake: FakeCatalog, cache: Path, now: datetime = NOW) -> CatalogPrices:
    return CatalogPrices("gcp", cache, api_endpoint=fake.url, now=now)


def test_skus_of_a_service_are_listed_across_pages_in_the_billing_currency(tmp_path: Path) -> None:
    with FakeCatalog.running() as fake:
        prices = catalog(fake, tmp_path).service_prices(COMPUTE, "EUR")

    assert fake.requests == [
        {"service": COMPUTE, "currencyCode": "EUR", "pageSize": "5000", "$alt": "json;enum-encoding=int"},
        {"service": COMPUTE, "currencyCode": "EUR", "pageSize": "5000", "$alt": "json;enum-encoding=int",
         "pageToken": "CiAKGjBwOTk3MzU1NjE5ODMwMzc1MRAA"},
    ]  # fmt: skip
    assert sorted(prices) == ["2E27-4F75-95CD", "9A4C-0B1E-77D2", "A1E8-BE35-6FF9"]
    assert prices["2E27-4F75-95CD"] == SkuPrice("h", "hour", (Tier(Decimal(0), Decimal("0.031611")),))
    egress = prices["9A4C-0B1E-77D2"]
    assert egress.tiers == (Tier(Decimal(0), Decimal(0)), Tier(Decimal(1), Decimal("0.01")))


def test_unit_price_picks_the_tier_of_the_export_row_and_checks_the_unit(tmp_path: Path) -> None:
    with FakeCatalog.running() as fake:
        prices = catalog(fake, tmp_path)
        assert prices.unit_price(COMPUTE, "9A4C-0B1E-77D2", "USD", "gibibyte", Decimal("1")) == Decimal("0.01")
        assert prices.unit_price(COMPUTE, "9A4C-0B1E-77D2", "USD", "gibibyte", Decimal("0")) == Decimal(0)
        assert prices.unit_price(COMPUTE, "9A4C-0B1E-77D2", "USD", "gibibyte", None) is None  # ambiguous
        assert prices.unit_price(COMPUTE, "2E27-4F75-95CD", "USD", "hour", None) == Decimal("0.031611")
        assert prices.unit_price(COMPUTE, "2E27-4F75-95CD", "USD", "gibibyte", None) is None  # other unit
        assert prices.unit_price(COMPUTE, "0000-0000-0000", "USD", "hour", None) is None  # unknown SKU


def test_second_run_reads_the_cache_and_makes_no_request(tmp_path: Path) -> None:
    with FakeCatalog.running() as fake:
        first = catalog(fake, tmp_path).service_prices(STORAGE, "USD")
        assert len(fake.requests) == 1
        again = catalog(fake, tmp_path, now=NOW + timedelta(hours=23))
        assert again.service_prices(STORAGE, "USD") == first
        assert (len(fake.requests), again.requests) == (1, 0)

        stale = catalog(fake, tmp_path, now=NOW + timedelta(hours=25))
        stale.service_prices(STORAGE, "USD")
        assert (len(fake.requests), stale.requests) == (2, 1)

    cached = json.loads((tmp_path / "gcp_catalog" / f"{STORAGE}-USD.json").read_text())
    assert cached["skus"]["E5F0-6A5D-7BAD"] == {
        "usage_unit": "GiBy.mo", "usage_unit_description": "gibibyte month", "tiers": [["0", "0.026"]],
    }  # fmt: skip
    assert cached["fetched_at"] == (NOW + timedelta(hours=25)).isoformat()


def test_a_corrupt_cache_file_is_fetched_again(tmp_path: Path) -> None:
    (tmp_path / "gcp_catalog").mkdir()
    (tmp_path / "gcp_catalog" / f"{STORAGE}-USD.json").write_text("{ not json")
    with FakeCatalog.running() as fake:
        prices = catalog(fake, tmp_path).service_prices(STORAGE, "USD")
    assert prices["E5F0-6A5D-7BAD"].tiers == (Tier(Decimal(0), Decimal("0.026")),)
    assert len(fake.requests) == 1


def test_api_errors_name_the_service_url(tmp_path: Path) -> None:
    with FakeCatalog.running(status=403) as fake, pytest.raises(SourceError) as error:
        catalog(fake, tmp_path).service_prices(COMPUTE, "USD")
    assert f"{fake.url}/v1/services/{COMPUTE}/skus: Cloud Billing Catalog API error 403" in str(error.value)
    assert "set catalog_prices: false" in str(error.value)
    assert not (tmp_path / "gcp_catalog" / f"{COMPUTE}-USD.json").exists()


def test_money_is_exact() -> None:
    assert str(money("1", 500000000)) == "1.5"
    assert str(money(None, 31611000)) == "0.031611"
    assert str(money("-2", -250000000)) == "-2.25"
    assert str(money("10", 0)) == "10"

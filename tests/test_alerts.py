"""Alert delivery through the outbox to a real local SMTP server (aiosmtpd, STARTTLS and login) and a real
local HTTP receiver (Slack-shaped and generic webhooks), with a channel that fails and then recovers."""

from __future__ import annotations

import datetime as dt
import email
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import Message as MailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from models.anomaly import Anomaly, Series, anomaly_frame
from models.config import CogsConfig, ConfigError, parse_config
from pipelines.alert_sensors import SENSOR_NAME, alert_sensor
from pipelines.alerts import build_message, look_closer, run_alerts
from pipelines.warehouse import Warehouse

T0 = datetime(2026, 10, 18, 9, 0, tzinfo=UTC)
STORM_DAY = date(2026, 10, 17)
SLACK_TOKEN = "T0CGS/B0CGS/xoxsecretTOKEN42"
HOOK_SECRET = "whsec-c0gs-very-secret"
SMTP_USER, SMTP_PASSWORD = "alerts@lumen.example", "p4ss-w0rd-secret"
SECRETS = (SLACK_TOKEN, HOOK_SECRET, SMTP_PASSWORD)


# --- a real local HTTP receiver ---------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)  # path → status to answer (default 200)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path → extra response headers

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = state.status.get(self.path, 200)
            reply = b"ok" if status == 200 else b"boom"
            self.send_response(status)
            for name, value in state.headers.get(self.path, {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- a real local SMTP server: aiosmtpd with STARTTLS (self-signed certificate) and login ----------------------


@dataclass
class Inbox:
    port: int = 0
    ca_file: str = ""
    messages: list[tuple[str, list[str], MailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.pem", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    box = Inbox(port=free_port(), ca_file=str(cert_file))

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            SMTP_USER,
            SMTP_PASSWORD,
        )
        if ok:
            box.logins.append(data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    yield box
    controller.stop()


# --- the warehouse with anomalies ---------------------------------------------------------------------------------


def anomaly(
    value: str = "support_chat",
    metric: str = "spend",
    start: date = STORM_DAY,
    n_days: int = 1,
    actual: float = 348.83,
    expected: float = 97.20,
    dimension: str = "feature",
    impact: float | None = None,
) -> Anomaly:
    """An anomaly as the detector stores it; impact defaults to actual - expected (right for spend)."""
    days = [start + timedelta(days=k) for k in range(n_days)]
    impact = actual - expected if impact is None else impact
    unit = "useful output" if metric == "unit_cost" else None
    found = Anomaly(
        Series(dimension, value, metric, unit),
        days,
        actual,
        expected,
        impact,
        36.2,
        "median of 4 earlier weekend days",
        {},
    )
    found.drivers = [{"dimension": "provider_service", "child": "OpenAI / OpenAI API", "actual": 350.0,
                      "expected": round(350.0 - impact, 2), "delta": round(impact, 2)}]  # fmt: skip
    return found


def publish(warehouse: Warehouse, *found: Anomaly, period: str = "2026-10", at: datetime = T0) -> None:
    """What the cost_anomalies asset does when the month is (re-)run."""
    frame = anomaly_frame(list(found)).with_columns(billing_period=pl.lit(period), detected_at=pl.lit(at))
    warehouse.replace("cost_anomalies", {"billing_period": period}, frame)


def config(warehouse: Warehouse, channels: list[dict[str, Any]], **alerts: Any) -> CogsConfig:
    features = {f: {} for f in ("support_chat", "code_assist")}
    document = {"warehouse": warehouse.url, "features": features, "alerts": {"channels": channels, **alerts}}
    return parse_config(yaml.safe_dump(document))


def outbox(warehouse: Warehouse) -> list[dict[str, Any]]:
    return warehouse.read("SELECT * FROM alert_outbox ORDER BY alert_id").to_dicts()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("COGS_TEST_SLACK_URL", receiver.url(f"/services/{SLACK_TOKEN}"))
    monkeypatch.setenv("COGS_TEST_HOOK_URL", receiver.url("/hook"))
    monkeypatch.setenv("COGS_TEST_HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("COGS_TEST_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("COGS_TEST_SMTP_PASSWORD", SMTP_PASSWORD)


def all_channels(receiver: Receiver, inbox: Inbox, tmp_path: Path) -> list[dict[str, Any]]:
    return [
        {"name": "slack", "type": "slack", "url_env": "COGS_TEST_SLACK_URL"},
        {"name": "hook", "type": "webhook", "url_env": "COGS_TEST_HOOK_URL", "secret_env": "COGS_TEST_HOOK_SECRET"},
        {"name": "broken", "type": "webhook", "url": receiver.url("/broken")},
        {
            "name": "mail",
            "type": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": inbox.port,
            "tls": "starttls",
            "ca_file": inbox.ca_file,
            "username_env": "COGS_TEST_SMTP_USER",
            "password_env": "COGS_TEST_SMTP_PASSWORD",
            "from": "cogs@lumen.example",
            "to": ["finops@lumen.example", "oncall@lumen.example"],
        },
        {"name": "local", "type": "file", "path": str(tmp_path / "alerts" / "alerts.jsonl")},
    ]


def test_every_channel_delivers_and_a_failing_one_is_retried_without_blocking_or_losing(
    warehouse: Warehouse, receiver: Receiver, inbox: Inbox, env: None, tmp_path: Path
) -> None:
    publish(warehouse, anomaly(), anomaly("support_chat", "unit_cost", actual=0.0268, expected=0.0058, impact=273.6))
    cfg = config(warehouse, all_channels(receiver, inbox, tmp_path))
    receiver.status["/broken"] = 500

    first = run_alerts(warehouse, cfg, T0)
    assert (first.queued, len(first.sent), len(first.failed)) == (10, 8, 1)
    assert first.failed == [
        "broken: broken:feature=support_chat/spend@2026-10-17: HTTP 500: boom "
        "(attempt 1, next at 2026-10-18 09:01:00 UTC)"
    ]  # its second alert waits for the retry instead of hammering a failing endpoint

    slack = receiver.at(f"/services/{SLACK_TOKEN}")
    assert len(slack) == 2
    payload = json.loads(slack[0].body)
    assert set(payload) == {"text", "blocks"} and [b["type"] for b in payload["blocks"]] == [
        "header",
        "section",
        "context",
    ]
    assert payload["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "Cost anomaly: support_chat spend +$251.63 (+259%) on 2026-10-17",
    }
    assert payload["text"].splitlines()[1:4] == [
        "Impact: $251.63 above expected over 1 day(s)",
        "Change: $348.83 actual vs $97.20 expected, score 36.2 (median of 4 earlier weekend days)",
        "Drivers: provider/service OpenAI / OpenAI API +$251.63",
    ]
    assert '`cogs query "SELECT date, cogs, useful_outputs' in payload["blocks"][2]["elements"][0]["text"]

    hook = receiver.at("/hook")
    assert len(hook) == 2
    headers, body = hook[0].headers, hook[0].body
    assert headers["X-Cogs-Event"] == "anomaly.new"
    assert headers["X-Cogs-Delivery"] == "hook:feature=support_chat/spend@2026-10-17#1"
    expected_signature = hmac.new(
        HOOK_SECRET.encode(), headers["X-Cogs-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Cogs-Signature"] == f"sha256={expected_signature}"
    sent = json.loads(body)
    assert sent["anomaly"]["anomaly_id"] == "feature=support_chat/spend@2026-10-17"
    assert sent["anomaly"]["impact_usd"] == 251.63 and sent["event"] == "anomaly.new"

    assert len(inbox.messages) == 2 and inbox.logins == [SMTP_USER, SMTP_USER]
    sender, recipients, mail = inbox.messages[0]
    assert (sender, recipients) == ("cogs@lumen.example", ["finops@lumen.example", "oncall@lumen.example"])
    assert mail["Subject"] == "Cost anomaly: support_chat spend +$251.63 (+259%) on 2026-10-17"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in mail.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Look closer: cogs query" in parts["text/plain"] and "<pre>cogs query" in parts["text/html"]

    lines = (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["subject"] for line in lines] == [
        "Cost anomaly: support_chat spend +$251.63 (+259%) on 2026-10-17",
        "Cost anomaly: support_chat cost per useful output +362% on 2026-10-17 (impact +$273.60)",
    ]

    rows = {r["alert_id"]: r for r in outbox(warehouse)}
    broken = rows["broken:feature=support_chat/spend@2026-10-17"]
    assert (broken["status"], broken["attempts"], broken["last_error"]) == ("retrying", 1, "HTTP 500: boom")
    assert broken["next_attempt_at"] == T0 + timedelta(seconds=60)
    assert rows["broken:feature=support_chat/unit_cost@2026-10-17"]["status"] == "pending"
    assert sorted(r["status"] for k, r in rows.items() if not k.startswith("broken")) == ["sent"] * 8

    second = run_alerts(warehouse, cfg, T0 + timedelta(seconds=30))  # in backoff: the channel is left alone
    assert (second.queued, second.sent, second.failed) == (0, [], [])
    assert len(receiver.at("/broken")) == 1

    receiver.status.clear()  # the endpoint recovers
    third = run_alerts(warehouse, cfg, T0 + timedelta(seconds=61))
    assert [line.split(":")[0] for line in third.sent] == ["broken", "broken"] and third.failed == []
    assert len(receiver.at("/broken")) == 3 and len(slack) == 2 and len(inbox.messages) == 2
    final = outbox(warehouse)
    assert [(r["status"], r["deliveries"]) for r in final] == [("sent", 1)] * 10
    assert next(r for r in final if r["channel"] == "broken")["last_error"] is None

    dump = json.dumps(final, default=str) + repr(first) + repr(third) + "".join(lines)
    assert not [s for s in SECRETS if s in dump]  # secrets live in the environment only


def test_restated_anomalies_update_or_withdraw_what_was_sent_never_duplicate(
    warehouse: Warehouse, receiver: Receiver, tmp_path: Path
) -> None:
    path = tmp_path / "alerts.jsonl"
    channels = [
        {"name": "local", "type": "file", "path": str(path)},
        {"name": "down", "type": "webhook", "url": receiver.url("/down")},
    ]
    cfg = config(warehouse, channels)
    receiver.status["/down"] = 503

    def messages() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    publish(warehouse, anomaly())
    run_alerts(warehouse, cfg, T0)
    publish(warehouse, anomaly(actual=348.83, expected=97.20), at=T0 + timedelta(hours=1))  # re-run, same numbers
    assert run_alerts(warehouse, cfg, T0 + timedelta(hours=1)).sent == []

    publish(warehouse, anomaly(n_days=2, actual=700.0, expected=200.0), at=T0 + timedelta(days=1))  # grew a day
    run_alerts(warehouse, cfg, T0 + timedelta(days=1))
    assert [m["event"] for m in messages()] == ["anomaly.new", "anomaly.changed"]
    assert messages()[1]["subject"] == (
        "Updated after a re-run: support_chat spend +$500.00 (+250%) from 2026-10-17 to 2026-10-18 (2 days)"
    )
    assert "impact was $251.63" in messages()[1]["text"]

    moved = anomaly(start=STORM_DAY - timedelta(days=1), n_days=3, actual=800.0, expected=250.0)  # restated bills
    publish(warehouse, moved, at=T0 + timedelta(days=2))
    run_alerts(warehouse, cfg, T0 + timedelta(days=2))
    rows = [r for r in outbox(warehouse) if r["channel"] == "local"]
    assert len(rows) == 1  # the same alert follows the moved run: no second "new" alert
    assert (rows[0]["anomaly_id"], rows[0]["event"], rows[0]["deliveries"]) == (
        "feature=support_chat/spend@2026-10-16",
        "changed",
        3,
    )

    publish(warehouse)  # the restatement removed it
    run_alerts(warehouse, cfg, T0 + timedelta(days=3))
    run_alerts(warehouse, cfg, T0 + timedelta(days=4))
    assert [m["event"] for m in messages()] == ["anomaly.new", "anomaly.changed", "anomaly.changed",
                                                "anomaly.withdrawn"]  # fmt: skip
    assert messages()[-1]["subject"] == (
        "Withdrawn: support_chat spend +$550.00 (+220%) from 2026-10-16 to 2026-10-18 (3 days)"
    )
    down = next(r for r in outbox(warehouse) if r["channel"] == "down")
    assert (down["status"], down["deliveries"]) == ("cancelled", 0)  # never reached anyone: nothing to retract
    attempts = len(receiver.at("/down"))
    run_alerts(warehouse, cfg, T0 + timedelta(days=5))
    assert len(receiver.at("/down")) == attempts

    publish(warehouse, anomaly(), at=T0 + timedelta(days=6))  # yet another restatement brings it back
    run_alerts(warehouse, cfg, T0 + timedelta(days=6))
    rows = outbox(warehouse)
    assert [(r["alert_id"], r["event"], r["status"]) for r in rows] == [
        ("down:feature=support_chat/spend@2026-10-17", "new", "retrying"),
        ("local:feature=support_chat/spend@2026-10-17", "changed", "sent"),
    ]  # one row per (anomaly, channel), whatever happened to it
    assert messages()[-1]["subject"].startswith("Updated after a re-run: support_chat spend +$251.63")


def test_channels_filter_by_feature_metric_impact_and_age(warehouse: Warehouse, tmp_path: Path) -> None:
    old = anomaly("code_assist", start=STORM_DAY - timedelta(days=20))
    publish(warehouse, anomaly(), anomaly("support_chat", "unit_cost", actual=0.03, expected=0.006), old)
    channels = [
        {"name": "code", "type": "file", "path": str(tmp_path / "code.jsonl"), "features": ["code_assist"]},
        {"name": "unit", "type": "file", "path": str(tmp_path / "unit.jsonl"), "metrics": ["unit_cost"]},
        {"name": "big", "type": "file", "path": str(tmp_path / "big.jsonl"), "min_impact_usd": 300},
        {"name": "all", "type": "file", "path": str(tmp_path / "all.jsonl")},
    ]
    run_alerts(warehouse, config(warehouse, channels), T0)
    queued = sorted((r["channel"], r["anomaly_id"]) for r in outbox(warehouse))
    assert queued == [
        ("all", "feature=support_chat/spend@2026-10-17"),
        ("all", "feature=support_chat/unit_cost@2026-10-17"),
        ("unit", "feature=support_chat/unit_cost@2026-10-17"),
    ]  # code_assist's anomaly ended 20 days ago (max_age_days 7); nothing reaches $300
    run_alerts(warehouse, config(warehouse, channels[:1], max_age_days=None), T0)
    assert ("code", "feature=code_assist/spend@2026-09-27") in [
        (r["channel"], r["anomaly_id"]) for r in outbox(warehouse)
    ]


def test_missing_secrets_and_rate_limits_are_retried_with_the_servers_delay(
    warehouse: Warehouse, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(warehouse, anomaly())
    receiver.status["/limited"] = 429
    receiver.headers["/limited"] = {"Retry-After": "600"}
    channels = [
        {"name": "slack", "type": "slack", "url_env": "COGS_TEST_UNSET_SLACK_URL"},
        {"name": "limited", "type": "webhook", "url": receiver.url("/limited")},
    ]
    monkeypatch.delenv("COGS_TEST_UNSET_SLACK_URL", raising=False)
    report = run_alerts(warehouse, config(warehouse, channels), T0)
    assert sorted(line.split(" (attempt")[0] for line in report.failed) == [
        "limited: limited:feature=support_chat/spend@2026-10-17: HTTP 429: boom",
        "slack: slack:feature=support_chat/spend@2026-10-17: environment variable COGS_TEST_UNSET_SLACK_URL "
        "(Slack incoming webhook URL) is not set",
    ]
    retry = {r["channel"]: r["next_attempt_at"] for r in outbox(warehouse)}
    assert retry == {"limited": T0 + timedelta(seconds=600), "slack": T0 + timedelta(seconds=60)}
    run_alerts(warehouse, config(warehouse, channels), T0 + timedelta(seconds=61))
    run_alerts(warehouse, config(warehouse, channels), T0 + timedelta(seconds=62))
    slack_row = next(r for r in outbox(warehouse) if r["channel"] == "slack")
    assert (slack_row["attempts"], slack_row["next_attempt_at"]) == (2, T0 + timedelta(seconds=61 + 120))


def test_the_sensor_reports_failures_after_serving_every_channel(
    duckdb_warehouse: Warehouse, receiver: Receiver, tmp_path: Path
) -> None:
    publish(duckdb_warehouse, anomaly())
    channels = [
        {"name": "down", "type": "webhook", "url": receiver.url("/down")},
        {"name": "local", "type": "file", "path": str(tmp_path / "alerts.jsonl")},
    ]
    receiver.status["/down"] = 500
    sensor = alert_sensor(config(duckdb_warehouse, channels), clock=lambda: T0)
    assert sensor.name == SENSOR_NAME and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    defs = dg.Definitions(sensors=[sensor], resources={"warehouse": duckdb_warehouse})
    context = dg.build_sensor_context(definitions=defs, resources={"warehouse": duckdb_warehouse})
    with pytest.raises(Exception, match=r"1 alert delivery\(ies\) failed and will be retried: down: .*HTTP 500: boom"):
        sensor.evaluate_tick(context)
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1  # the other channel was served
    receiver.status.clear()
    later = alert_sensor(config(duckdb_warehouse, channels), clock=lambda: T0 + timedelta(minutes=2))
    result = later.evaluate_tick(dg.build_sensor_context(definitions=defs, resources={"warehouse": duckdb_warehouse}))
    assert result.skip_message == "0 queued, 1 sent, 0 failed"
    idle = alert_sensor(config(duckdb_warehouse, []))
    assert idle.default_status == dg.DefaultSensorStatus.STOPPED


def test_messages_say_impact_change_drivers_and_how_to_look_closer() -> None:
    row = anomaly("support_chat", "unit_cost", actual=0.026849, expected=0.005753, impact=273.6).row()
    row |= {"drivers": json.loads(str(row["drivers"])), "related": [
        {"series_id": "provider_service=OpenAI / OpenAI API/spend", "impact_usd": 319.05}]}  # fmt: skip
    message = build_message(row, "new")
    assert message.text.splitlines() == [
        "Cost anomaly: support_chat cost per useful output +367% on 2026-10-17 (impact +$273.60)",
        "Impact: $273.60 above expected over 1 day(s)",
        "Change: $0.026849 vs $0.005753 expected per unit, score 36.2 (median of 4 earlier weekend days)",
        "Drivers: provider/service OpenAI / OpenAI API +$273.60",
        "Same incident: provider_service=OpenAI / OpenAI API/spend +$319.05",
        'Look closer: cogs query "SELECT date, cogs, useful_outputs, cost_per_useful_output FROM feature_costs_daily '
        "WHERE feature = 'support_chat' AND date BETWEEN '2026-09-19' AND '2026-10-17' ORDER BY date\"",
    ]
    provider = anomaly('O\'Neil "GPU" / $Compute', dimension="provider_service").row()
    assert look_closer(provider) == (
        'cogs query "SELECT charge_date, feature, SUM(effective_cost) AS cost FROM cost_allocations WHERE '
        "provider_name || ' / ' || service_name = 'O''Neil \\\"GPU\\\" / \\$Compute' AND charge_date BETWEEN "
        "'2026-09-19' AND '2026-10-17' GROUP BY 1, 2 ORDER BY 1, 3 DESC\""
    )


def test_alert_channels_are_validated_in_cogs_yaml() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.channels\.0\.webhook: Value error, channel 'x': set exactly one"):
        parse_config("alerts: {channels: [{name: x, type: webhook}]}")
    with pytest.raises(ConfigError, match=r"alert channel names must be unique; repeated: \['a'\]"):
        parse_config("alerts: {channels: [{name: a, type: file, path: x}, {name: a, type: file, path: y}]}")
    with pytest.raises(ConfigError, match=r"set both username_env and password_env, or neither"):
        parse_config(
            "alerts: {channels: [{name: m, type: email, smtp_host: h, from: a@b.c, to: [d@e.f], username_env: U}]}"
        )
    with pytest.raises(
        ConfigError, match=r"alert channel 'f' names unknown features \['nope'\]; features: \['support_chat'\]"
    ):
        parse_config(
            "features: {support_chat: {}}\nalerts: {channels: [{name: f, type: file, path: x, features: [nope]}]}"
        )
    cfg = parse_config("alerts: {channels: [{name: f, type: file, path: x}]}")
    assert dt.timedelta(seconds=cfg.alerts.retry_base_seconds) == timedelta(minutes=1)

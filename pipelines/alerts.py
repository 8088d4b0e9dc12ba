"""Alerts: cost anomalies → the ``alert_outbox`` table → Slack, e-mail, webhooks and files.

Durability. Every (anomaly, channel) is queued as one outbox row before anything is sent; a delivery
updates its row (status, attempts, last_error, next_attempt_at). A failure is retried with exponential
backoff (``retry_base_seconds`` doubling up to ``retry_max_seconds``, or the server's Retry-After) and
never given up; a failing channel never holds back the others.

Restatements. Rows follow their series' anomaly: when a re-run changes it (days, impact) after it was
sent, one "updated" message goes out on the same row; when it disappears, one "withdrawn" message. An
alert is never sent twice as new.

Channels (``alerts.channels`` in cogs.yaml):
- ``slack``: an incoming webhook, JSON ``text`` (the notification fallback) and ``blocks`` (Block Kit: header,
  section with fields, context), as Slack's "Sending messages using incoming webhooks" documents; HTTP 200
  is success, 429 carries Retry-After.
- ``email``: SMTP with smtplib (STARTTLS, implicit TLS or none; login from environment variables), a
  plain-text and an HTML part.
- ``webhook``: the anomaly as JSON (POST). Headers: ``X-Cogs-Event`` (anomaly.new | anomaly.changed |
  anomaly.withdrawn), ``X-Cogs-Delivery`` (unique per message: receivers can drop duplicates),
  ``X-Cogs-Timestamp`` (Unix seconds) and, with ``secret_env``, ``X-Cogs-Signature: sha256=<hex>``: the
  HMAC-SHA256 of ``<timestamp>.<body>`` with the secret. Any 2xx is success.
- ``file``: one JSON line per message appended to a local file.

Secrets (webhook URLs, SMTP passwords, HMAC keys) are read from environment variables at send time and
never written to the outbox, logs or errors.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
import os
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import sqlalchemy as sa

from models.config import (
    AlertChannel,
    CogsConfig,
    EmailAlertChannel,
    FileAlertChannel,
    SlackAlertChannel,
    WebhookAlertChannel,
)
from pipelines.warehouse import Warehouse

RECHECK_DAYS = 120  # anomalies ending earlier are no longer followed for restatements
CHANGE_SHARE = 0.10  # a re-run moving the impact by more than this share is worth an update
USER_AGENT = "inference-cogs-alerts"

OUTBOX_SCHEMA: dict[str, pl.DataType] = {
    "alert_id": pl.String(),
    "channel": pl.String(),
    "anomaly_id": pl.String(),
    "series_id": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
    "impact_usd": pl.Float64(),
    "event": pl.String(),
    "status": pl.String(),
    "attempts": pl.Int64(),
    "deliveries": pl.Int64(),
    "last_error": pl.String(),
    "next_attempt_at": pl.Datetime("us", "UTC"),
    "created_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
    "sent_at": pl.Datetime("us", "UTC"),
    "sent_impact_usd": pl.Float64(),
    "anomaly": pl.String(),
}


class DeliveryError(Exception):
    """A channel refused or could not take a message; ``retry_after``: seconds the server asked to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- messages --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    event: str  # new | changed | withdrawn
    subject: str
    lines: tuple[str, ...]  # impact, change, drivers, related
    query: str  # the command that shows the numbers behind the alert
    anomaly: dict[str, Any]
    previous_impact: float | None = None

    @property
    def text(self) -> str:
        return "\n".join((self.subject, *self.lines, f"Look closer: {self.query}"))


def _usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _unit_usd(value: float, reference: float) -> str:
    """USD per unit with four significant digits of the smaller of the two values compared."""
    smallest = min(abs(value), abs(reference)) or 1.0
    return f"${value:,.{max(2, 3 - math.floor(math.log10(smallest)))}f}"


DIMENSION_LABELS = {"provider_service": "provider/service", "line_item": "line item"}


def _what(anomaly: dict[str, Any]) -> str:
    if anomaly["metric"] == "spend":
        return f"{anomaly['dimension_value']} spend"
    unit = anomaly.get("unit") or "useful output"
    return f"{anomaly['dimension_value']} cost per {unit}"


def _when(anomaly: dict[str, Any]) -> str:
    start, end = anomaly["start_date"], anomaly["end_date"]
    return f"on {start}" if start == end else f"from {start} to {end} ({anomaly['days']} days)"


def build_message(anomaly: dict[str, Any], event: str, previous_impact: float | None = None) -> Message:
    """The alert for one anomaly row (as stored in cost_anomalies, drivers and related parsed)."""
    change = anomaly.get("relative_change")
    change_text = f"{change:+.0%}" if change is not None else "up"
    impact = float(anomaly["impact_usd"])
    if anomaly["metric"] == "spend":
        headline = f"{_what(anomaly)} +{_usd(impact)} ({change_text}) {_when(anomaly)}"
    else:
        headline = f"{_what(anomaly)} {change_text} {_when(anomaly)} (impact +{_usd(impact)})"
    prefix = {"new": "Cost anomaly: ", "changed": "Updated after a re-run: ", "withdrawn": "Withdrawn: "}[event]
    actual, expected = float(anomaly["actual"]), float(anomaly["expected"])
    if anomaly["metric"] == "spend":
        compared = f"{_usd(actual)} actual vs {_usd(expected)} expected"
    else:
        compared = f"{_unit_usd(actual, expected)} vs {_unit_usd(expected, actual)} expected per unit"
    lines = [
        f"Impact: {_usd(impact)} above expected over {anomaly['days']} day(s)",
        f"Change: {compared}, score {float(anomaly['max_score']):.1f} ({anomaly.get('basis') or 'baseline'})",
    ]
    if event == "withdrawn":
        lines = ["A re-run of the month (restated bills) no longer finds this anomaly; the alert is withdrawn."]
    elif event == "changed" and previous_impact is not None:
        lines.insert(0, f"A re-run of the month (restated bills) changed it: impact was {_usd(previous_impact)}.")
    drivers = anomaly.get("drivers") or []
    if drivers and event != "withdrawn":
        lines.append("Drivers: " + "; ".join(_driver(d) for d in drivers[:6]))
    related = anomaly.get("related") or []
    if related and event != "withdrawn":
        lines.append(
            "Same incident: " + "; ".join(f"{r['series_id']} +{_usd(float(r['impact_usd']))}" for r in related)
        )
    return Message(event, prefix + headline, tuple(lines), look_closer(anomaly), anomaly, previous_impact)


def _driver(driver: dict[str, Any]) -> str:
    estimated = " (est.)" if driver.get("estimated") else ""
    label = DIMENSION_LABELS.get(str(driver["dimension"]), str(driver["dimension"]))
    return f"{label} {driver['child']} +{_usd(float(driver['delta']))}{estimated}"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _shell_double_quoted(text: str) -> str:
    return '"' + "".join("\\" + c if c in '"$`\\' else c for c in text) + '"'


def look_closer(anomaly: dict[str, Any]) -> str:
    """A ``cogs query`` command showing the series around the anomaly (four weeks before it)."""
    start = date.fromisoformat(str(anomaly["start_date"])) - timedelta(days=28)
    end = str(anomaly["end_date"])
    value = _sql_text(str(anomaly["dimension_value"]))
    if anomaly["dimension"] == "feature":
        sql = (
            "SELECT date, cogs, useful_outputs, cost_per_useful_output FROM feature_costs_daily "
            f"WHERE feature = {value} AND date BETWEEN '{start}' AND '{end}' ORDER BY date"
        )
    else:
        sql = (
            "SELECT charge_date, feature, SUM(effective_cost) AS cost FROM cost_allocations "
            f"WHERE provider_name || ' / ' || service_name = {value} AND charge_date BETWEEN '{start}' AND '{end}' "
            "GROUP BY 1, 2 ORDER BY 1, 3 DESC"
        )
    return "cogs query " + _shell_double_quoted(sql)


# --- channels ------------------------------------------------------------------------------------------------------


def _secret(name: str | None, what: str) -> str:
    value = os.environ.get(name or "")
    if not name or not value:
        raise DeliveryError(f"environment variable {name} ({what}) is not set")
    return value


def _redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:300]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, secrets: tuple[str, ...]) -> None:
    try:
        response = httpx.post(url, content=body, headers={"User-Agent": USER_AGENT, **headers}, timeout=timeout)
    except httpx.HTTPError as exc:  # connection refused, timeout, TLS: the message must not name the URL
        raise DeliveryError(_redact(f"{type(exc).__name__}: {exc}", url, *secrets)) from None
    if not 200 <= response.status_code < 300:
        retry_after = response.headers.get("Retry-After")
        raise DeliveryError(
            _redact(f"HTTP {response.status_code}: {response.text.strip()[:200]}", url, *secrets),
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )


def slack_payload(message: Message) -> dict[str, Any]:
    """Block Kit message: ``text`` is the notification fallback, ``blocks`` what the channel shows."""

    def esc(text: str) -> str:  # Slack mrkdwn control characters
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return {
        "text": message.text[:3000],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": message.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": esc("\n".join(message.lines))[:3000]}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Look closer: `{esc(message.query)}`"[:3000]}],
            },
        ],
    }


def send_slack(channel: SlackAlertChannel, message: Message, delivery_id: str) -> None:
    url = _secret(channel.url_env, "Slack incoming webhook URL")
    body = json.dumps(slack_payload(message)).encode()
    _post(url, body, {"Content-Type": "application/json"}, channel.timeout_seconds, ())


def webhook_body(message: Message, delivery_id: str) -> dict[str, Any]:
    return {
        "event": f"anomaly.{message.event}",
        "delivery_id": delivery_id,
        "subject": message.subject,
        "text": message.text,
        "query": message.query,
        "previous_impact_usd": message.previous_impact,
        "anomaly": message.anomaly,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Cogs-Signature``: sha256=HMAC-SHA256(secret, "<timestamp>.<body>") in hex."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def send_webhook(channel: WebhookAlertChannel, message: Message, delivery_id: str) -> None:
    url = channel.url or _secret(channel.url_env, "webhook URL")
    body = json.dumps(webhook_body(message, delivery_id), default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        **channel.headers,
        "Content-Type": "application/json",
        "X-Cogs-Event": f"anomaly.{message.event}",
        "X-Cogs-Delivery": delivery_id,
        "X-Cogs-Timestamp": timestamp,
    }
    secret = _secret(channel.secret_env, "webhook signing secret") if channel.secret_env else ""
    if secret:
        headers["X-Cogs-Signature"] = sign(secret, timestamp, body)
    _post(url, body, headers, channel.timeout_seconds, (secret,))


def email_message(channel: EmailAlertChannel, message: Message) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = channel.from_address
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain=channel.from_address.rpartition("@")[2] or None)
    mail.set_content(message.text)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in message.lines)
    mail.add_alternative(
        f"<html><body><h2>{html.escape(message.subject)}</h2><ul>{items}</ul>"
        f"<p>Look closer:</p><pre>{html.escape(message.query)}</pre></body></html>",
        subtype="html",
    )
    return mail


def send_email(channel: EmailAlertChannel, message: Message, delivery_id: str) -> None:
    user = _secret(channel.username_env, "SMTP user") if channel.username_env else ""
    password = _secret(channel.password_env, "SMTP password") if channel.password_env else ""
    context = ssl.create_default_context(cafile=channel.ca_file)
    where = f"SMTP {channel.smtp_host}:{channel.smtp_port}"
    try:
        if channel.tls == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds, context=context
            )
        else:
            smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=channel.timeout_seconds)
        with smtp:
            if channel.tls == "starttls":
                smtp.starttls(context=context)
            if user:
                smtp.login(user, password)
            smtp.send_message(email_message(channel, message))
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(_redact(f"{where}: {type(exc).__name__}: {exc}", password)) from None


def send_file(channel: FileAlertChannel, message: Message, delivery_id: str) -> None:
    path = Path(channel.path)
    record = {"at": datetime.now(UTC).isoformat(), **webhook_body(message, delivery_id)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")
    except OSError as exc:
        raise DeliveryError(f"{path}: {exc.strerror or exc}") from None


Sender = Callable[[Any, Message, str], None]
SENDERS: dict[str, Sender] = {"slack": send_slack, "email": send_email, "webhook": send_webhook, "file": send_file}


# --- the outbox ---------------------------------------------------------------------------------------------------


@dataclass
class AlertReport:
    queued: int = 0
    updated: int = 0
    withdrawn: int = 0
    sent: list[str] = field(default_factory=list)  # "<channel>: <subject>"
    failed: list[str] = field(default_factory=list)  # "<channel>: <alert>: <error>; retry at ..."

    def summary(self) -> str:
        parts = [f"{self.queued} queued", f"{len(self.sent)} sent", f"{len(self.failed)} failed"]
        if self.updated or self.withdrawn:
            parts.insert(1, f"{self.updated} updated, {self.withdrawn} withdrawn after re-runs")
        return ", ".join(parts)


def run_alerts(warehouse: Warehouse, config: CogsConfig, now: datetime | None = None) -> AlertReport:
    """Queue new, changed and withdrawn anomalies for every channel, then deliver what is due."""
    now = now or datetime.now(UTC)
    report = AlertReport()
    if not config.alerts.channels:
        return report
    for name in ("ddl/050_cost_anomalies.sql", "ddl/090_alert_outbox.sql"):
        warehouse.run_sql_file(name)
    sync_outbox(warehouse, config, now, report)
    deliver_due(warehouse, config, now, report)
    return report


def _current_anomalies(warehouse: Warehouse, since: date) -> dict[str, dict[str, Any]]:
    """Anomaly id → its latest row (a run touching two months is stored by both)."""
    rows = warehouse.read(
        "SELECT * FROM cost_anomalies WHERE end_date >= :since ORDER BY detected_at", since=since
    ).to_dicts()
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        row["drivers"] = json.loads(row["drivers"] or "[]")
        row["related"] = json.loads(row.get("related") or "[]")
        latest[row["anomaly_id"]] = row
    return latest


def _eligible(channel: AlertChannel, anomaly: dict[str, Any]) -> bool:
    if anomaly["metric"] not in channel.metrics or float(anomaly["impact_usd"]) < channel.min_impact_usd:
        return False
    return not channel.features or (
        anomaly["dimension"] == "feature" and anomaly["dimension_value"] in channel.features
    )


def _snapshot(anomaly: dict[str, Any]) -> str:
    keep = {k: v for k, v in anomaly.items() if k not in ("billing_period", "detected_at")}
    return json.dumps(keep, default=str, sort_keys=True)


def _overlapping(row: dict[str, Any], anomalies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The series' current anomaly overlapping the row's days (a re-run may have moved its first day)."""
    same = [
        a
        for a in anomalies
        if a["series_id"] == row["series_id"]
        and a["start_date"] <= row["end_date"]
        and row["start_date"] <= a["end_date"]
    ]
    exact = [a for a in same if a["anomaly_id"] == row["anomaly_id"]]
    return (exact or sorted(same, key=lambda a: -float(a["impact_usd"])) or [None])[0]


def _changed(row: dict[str, Any], anomaly: dict[str, Any]) -> bool:
    old = float(row["impact_usd"])
    moved = abs(float(anomaly["impact_usd"]) - old) > max(1.0, CHANGE_SHARE * abs(old))
    return moved or (anomaly["start_date"], anomaly["end_date"]) != (row["start_date"], row["end_date"])


def sync_outbox(warehouse: Warehouse, config: CogsConfig, now: datetime, report: AlertReport) -> None:
    """Queue anomalies not yet in the outbox; re-queue sent alerts whose anomaly a re-run changed or removed."""
    today = now.date()
    anomalies = list(_current_anomalies(warehouse, today - timedelta(days=RECHECK_DAYS)).values())
    outbox = warehouse.read(
        "SELECT * FROM alert_outbox WHERE end_date >= :since",
        since=today - timedelta(days=RECHECK_DAYS),
    ).to_dicts()
    max_age = config.alerts.max_age_days
    new_rows = []
    with warehouse.transaction() as conn:
        for channel in config.alerts.channels:
            rows = [r for r in outbox if r["channel"] == channel.name]
            followed: set[str] = set()
            for row in rows:
                anomaly = _overlapping(row, anomalies)
                if anomaly is not None:
                    followed.add(anomaly["anomaly_id"])
                if update := _follow(row, anomaly, now, report):
                    _update(warehouse, row["alert_id"], update, conn)
            for anomaly in anomalies:
                if anomaly["anomaly_id"] in followed or not _eligible(channel, anomaly):
                    continue
                if max_age is not None and anomaly["end_date"] < today - timedelta(days=max_age):
                    continue  # found late (a backfill): not news any more
                followed.add(anomaly["anomaly_id"])
                new_rows.append(_new_row(channel.name, anomaly, now))
        if new_rows:
            warehouse.insert("alert_outbox", pl.DataFrame(new_rows, schema=OUTBOX_SCHEMA), conn)
    report.queued += len(new_rows)


def _update(warehouse: Warehouse, alert_id: str, columns: dict[str, Any], conn: sa.Connection | None = None) -> None:
    sets = ", ".join(f"{k} = CAST(:{k} AS JSON)" if k == "anomaly" else f"{k} = :{k}" for k in columns)
    warehouse.execute(f"UPDATE alert_outbox SET {sets} WHERE alert_id = :alert_id", conn, alert_id=alert_id, **columns)


def _new_row(channel: str, anomaly: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "alert_id": f"{channel}:{anomaly['anomaly_id']}",
        "channel": channel,
        "anomaly_id": anomaly["anomaly_id"],
        "series_id": anomaly["series_id"],
        "start_date": anomaly["start_date"],
        "end_date": anomaly["end_date"],
        "impact_usd": float(anomaly["impact_usd"]),
        "event": "new",
        "status": "pending",
        "attempts": 0,
        "deliveries": 0,
        "last_error": None,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
        "sent_impact_usd": None,
        "anomaly": _snapshot(anomaly),
    }


def _follow(row: dict[str, Any], anomaly: dict[str, Any] | None, now: datetime, report: AlertReport) -> dict[str, Any]:
    """The outbox columns to change for a row whose anomaly a re-run changed or removed (empty: none)."""
    delivered = int(row["deliveries"]) > 0
    if row["status"] == "cancelled":  # withdrawn before it went out; a later re-run may bring it back
        if anomaly is None:
            return {}
        return _following(anomaly, now) | {"event": "new", "status": "pending", "attempts": 0, "next_attempt_at": now}
    if anomaly is None:
        if not delivered:
            return {"status": "cancelled", "updated_at": now}
        if row["event"] == "withdrawn":
            return {}
        report.withdrawn += 1
        return {"event": "withdrawn", "status": "pending", "attempts": 0, "next_attempt_at": now, "updated_at": now}
    if not _changed(row, anomaly) and row["event"] != "withdrawn":
        return {}
    follow = _following(anomaly, now)
    if not delivered:
        return follow  # nothing went out yet: the pending message simply carries the new numbers
    report.updated += 1
    return follow | {"event": "changed", "status": "pending", "attempts": 0, "next_attempt_at": now}


def _following(anomaly: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The outbox columns that make a row carry ``anomaly``'s current numbers."""
    return {
        "anomaly_id": anomaly["anomaly_id"],
        "start_date": anomaly["start_date"],
        "end_date": anomaly["end_date"],
        "impact_usd": float(anomaly["impact_usd"]),
        "anomaly": _snapshot(anomaly),
        "updated_at": now,
    }


def _backoff(attempts: int, config: CogsConfig, retry_after: float | None) -> timedelta:
    delay = min(config.alerts.retry_base_seconds * 2 ** (attempts - 1), config.alerts.retry_max_seconds)
    return timedelta(seconds=max(delay, retry_after or 0))


def deliver_due(
    warehouse: Warehouse,
    config: CogsConfig,
    now: datetime,
    report: AlertReport,
    senders: dict[str, Sender] | None = None,
) -> None:
    """Send every open row that is due, oldest first; a failing channel is left alone until its retry is due."""
    senders = senders or SENDERS
    channels = {c.name: c for c in config.alerts.channels}
    due = warehouse.read(
        "SELECT * FROM alert_outbox WHERE status IN ('pending', 'retrying') AND next_attempt_at <= :now "
        "ORDER BY created_at, alert_id",
        now=now,
    ).to_dicts()
    # A channel waiting out a backoff is not called for its other alerts either: they go out after the retry.
    failing = set(
        warehouse.read(
            "SELECT DISTINCT channel FROM alert_outbox WHERE status = 'retrying' AND next_attempt_at > :now", now=now
        )["channel"].to_list()
    )
    for row in due:
        channel = channels.get(row["channel"])
        if channel is None or channel.name in failing:
            continue  # a channel removed from cogs.yaml keeps its rows until it comes back
        update, line, ok = _attempt(row, channel, config, now, senders)
        _update(warehouse, row["alert_id"], update)
        (report.sent if ok else report.failed).append(line)
        if not ok:
            failing.add(channel.name)


def _attempt(
    row: dict[str, Any], channel: AlertChannel, config: CogsConfig, now: datetime, senders: dict[str, Sender]
) -> tuple[dict[str, Any], str, bool]:
    """Send one row's message: the columns to update, a line for the report, and whether it went out."""
    anomaly = json.loads(row["anomaly"])
    previous = row["sent_impact_usd"] if row["event"] == "changed" else None
    message = build_message(anomaly, row["event"], previous)
    delivery_id = f"{row['alert_id']}#{int(row['deliveries']) + 1}"
    try:
        senders[channel.type](channel, message, delivery_id)
    except DeliveryError as exc:
        attempts = int(row["attempts"]) + 1
        retry_at = now + _backoff(attempts, config, exc.retry_after)
        update = {
            "status": "retrying",
            "attempts": attempts,
            "last_error": str(exc),
            "next_attempt_at": retry_at,
            "updated_at": now,
        }
        line = (
            f"{channel.name}: {row['alert_id']}: {exc} (attempt {attempts}, next at {retry_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
        return update, line, False
    update = {
        "status": "sent",
        "attempts": 0,
        "deliveries": int(row["deliveries"]) + 1,
        "last_error": None,
        "next_attempt_at": None,
        "sent_at": now,
        "sent_impact_usd": float(anomaly["impact_usd"]),
        "updated_at": now,
    }
    return update, f"{channel.name}: {message.subject}", True

"""``cogs detect``: backtesting the detector on a CSV of daily series, without a warehouse."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app

WEEK = [1000.0, 1020.0, 980.0, 1010.0, 990.0, 500.0, 480.0]
MONDAY = date(2026, 1, 5)
HEADER = [
    "series_id", "date", "metric", "score", "expected", "actual", "impact_usd", "relative_change", "run_start",
    "basis", "drivers",
]  # fmt: skip


def write_series(path: Path) -> Path:
    """Two series over 8 weeks: ``chat`` has a retry storm on day 44 (spend ×2, outputs −20%) on one model;
    ``search`` only grows, and once has twice its traffic at the same unit cost (day 47, spend only)."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["series_id", "date", "spend_usd", "useful_outputs", "model"])
        for i in range(56):
            day = MONDAY + timedelta(days=i)
            for model, share in (("gpt-4.1", 0.7), ("gpt-4.1-mini", 0.3)):
                storm = 2.0 if (i == 44 and model == "gpt-4.1") else 1.0
                outputs = WEEK[i % 7] * share * 100 * (0.8 if i == 44 else 1.0)
                writer.writerow(["chat", day, round(WEEK[i % 7] * share * storm, 2), round(outputs), model])
            surge = 2.0 if i == 47 else 1.0
            writer.writerow(["search", day, round(WEEK[i % 7] * 3 * surge, 2), round(WEEK[i % 7] * 3000 * surge), ""])
    return path


def test_detect_writes_one_row_per_flagged_day_and_metric(tmp_path: Path) -> None:
    out = tmp_path / "out" / "detections.csv"
    result = CliRunner().invoke(app, ["detect", "--series", str(write_series(tmp_path / "s.csv")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 series, 3 flagged day(s) in 3 run(s)" in result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == HEADER
    assert [r[:3] for r in rows[1:]] == [
        ["chat", "2026-02-18", "spend"],
        ["chat", "2026-02-18", "unit_cost"],  # each useful output got dearer
        ["search", "2026-02-21", "spend"],  # more traffic at the same unit cost: spend only
    ]
    chat = dict(zip(HEADER, rows[1], strict=True))
    assert (chat["expected"], chat["actual"], chat["impact_usd"]) == ("980.0", "1666.0", "686.0")
    assert chat["drivers"] == "model=gpt-4.1 +686.00"
    assert chat["run_start"] == "2026-02-18"


def test_detect_settings_can_be_tuned_from_the_command_line(tmp_path: Path) -> None:
    series = str(write_series(tmp_path / "s.csv"))
    result = CliRunner().invoke(app, ["detect", "--series", series, "--out", "-", "--min-impact", "1000"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("series_id", "chat", "search"))]
    assert lines[0] == ",".join(HEADER)
    assert [line.split(",")[:3] for line in lines[1:]] == [["search", "2026-02-21", "spend"]]  # chat's $686: too small


def test_bad_input_fails_naming_the_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("series_id,date,spend_usd,useful_outputs\nchat,2026-01-05,12.5,100\nchat,05/01/2026,12.5,100\n")
    result = CliRunner().invoke(app, ["detect", "--series", str(bad), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert f"{bad} line 3, column date: expected a date like 2026-10-17, got '05/01/2026'" in " ".join(
        result.output.split()
    )
    missing = CliRunner().invoke(app, ["detect", "--series", str(tmp_path / "nope.csv"), "--out", "-"])
    assert missing.exit_code == 2 and "cannot read" in missing.output and "nope.csv" in missing.output
    assert not (tmp_path / "o.csv").exists()


def test_help_documents_the_output_columns_in_order() -> None:
    result = CliRunner().invoke(app, ["detect", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "series_id, date, metric (spend | unit_cost), score (robust z-score)," in text
    assert "impact_usd (excess cost that day), relative_change (actual / expected - 1)" in text

"""Re-run, NULL-safe, the focus-validator checks whose "X is not 'v'" conditions never match a NULL X.

focus-validator 2.2.1 writes the FOCUS condition "ChargeClass is not "Correction"" as
``(ChargeClass IS NOT NULL AND ChargeClass <> 'Correction')``. ChargeClass is NULL on every ordinary
charge (FOCUS 1.2: it is only ever "Correction"), so such a condition is false on every row that is
not a correction and the check passes without looking at them: "ListUnitPrice MUST NOT be null for
Usage/Purchase rows" or "ListUnitPrice × PricingQuantity = ListCost" can never fail (see
docs/validator-defects.md, "Checks that pass without testing anything"). The same holds for
CommitmentDiscountStatus "is not Unused" on rows without a commitment discount.

This module takes the validator's own SQL for each check (``--explain-mode``), rewrites only that
pattern to ``X IS DISTINCT FROM 'v'`` (true for NULL, as the spec's wording means), and runs it
with DuckDB on the same Parquet file, for the checks the validator reported as passed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

# (X IS NOT NULL AND X <> 'v') as the validator writes "X is not 'v'"
_NOT_VALUE_EXCLUDING_NULL = re.compile(r"\((\w+) IS NOT NULL AND \1 <> ('[^']*')\)")
_RULE_HEADING = re.compile(r"^📋 (?P<rule>[A-Za-z]+-[A-Z]-\d{3}-[MCOR])\s*$")
TABLE = "focus_data"  # the table name in the validator's SQL


@dataclass(frozen=True)
class NullSafeFinding:
    rule: str
    violations: int
    message: str


def null_safe(sql: str) -> str:
    """The same SQL with every NULL-excluding "is not" made NULL-inclusive."""
    return _NOT_VALUE_EXCLUDING_NULL.sub(r"(\1 IS DISTINCT FROM \2)", sql)


def parse_explain(text: str) -> dict[str, str]:
    """Rule id → the requirement SQL that ``focus-validator --explain-mode`` prints for it (leaf rules only)."""
    sql: dict[str, str] = {}
    rule: str | None = None
    lines: list[str] | None = None
    for line in [*text.splitlines(), ""]:
        if m := _RULE_HEADING.match(line):
            rule, lines = m["rule"], None
        elif rule and line.strip() == "SQL:":
            lines = []
        elif lines is not None and line.strip():
            lines.append(line.strip())
        elif lines is not None and rule:
            sql[rule] = " ".join(lines)
            rule, lines = None, None
    return sql


def explain(validator: Path, cwd: Path, version: str, criteria: Iterable[str]) -> dict[str, str]:
    command = [
        str(validator),
        "--explain-mode",
        "--validate-version",
        version,
        "--block-download",
        "--applicability-criteria",
        ",".join(criteria),
    ]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, encoding="utf-8", timeout=120, check=True)
    return parse_explain(done.stdout)


def recheck(data: Path, sql_by_rule: dict[str, str], passed: Iterable[str]) -> list[NullSafeFinding]:
    """Run the NULL-safe SQL of each passed check whose SQL the rewrite changes; the ones that find rows."""
    findings = []
    with duckdb.connect() as con:
        path = str(data).replace("'", "''")  # a view can't take a prepared parameter
        con.execute(f"CREATE VIEW {TABLE} AS SELECT * FROM read_parquet('{path}')")
        for rule in sorted(passed):
            sql = sql_by_rule.get(rule)
            if sql is None or null_safe(sql) == sql:
                continue
            row = con.execute(null_safe(sql)).fetchone()
            violations = int(row[0]) if row and row[0] is not None else 0
            if violations:
                message = str(row[1]) if row and len(row) > 1 and row[1] else f"{rule} failed"
                findings.append(NullSafeFinding(rule, violations, message))
    return findings

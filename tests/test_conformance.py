"""The conformance runner's own logic: report parsing, what the defects file accepts, the NULL-safe re-run.

The validator itself runs in ``make conformance`` (its own Python 3.12 venv); these tests use its output
formats, copied from focus-validator 2.2.1, so they run in the project venv in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conformance import nullsafe
from conformance.export import ALL_CRITERIA, CASES, criteria_except
from conformance.run import (
    DEFECTS_DOC,
    Failure,
    ValidatorOutputError,
    composite_children,
    documented_defects,
    judge,
    parse_report,
)

REPORT = """
=== Validation Results ===
Total: 4 | Pass: 1 | Fail: 2 | Skipped: 1
✅ BilledCost-C-001-M: PASS  (violations=0, 0.4ms)
❌ BilledCost-C-005-C: FAIL  (violations=615, msg=BilledCost MUST equal '0'., 2.1ms)
❌ BilledCost-C-000-M: FAIL  (violations=1, msg=BilledCost-C-000-M: AND failed - failed child rules: [BilledCost-C-005-C])
⏭️ Tags-C-000-C: SKIPPED  (violations=0, reason=rule not applicable)

--- Failures ---
- BilledCost-C-005-C: violations=615; BilledCost MUST equal '0'.
  MustSatisfy: BilledCost MUST be 0 for charges where payments are received by a third party.
  Sample violations:
    BilledCost='8e-07'
    BilledCost='1.60599e-05'
- BilledCost-C-000-M: violations=1; BilledCost-C-000-M: AND failed - failed child rules: [BilledCost-C-005-C]
  MustSatisfy: The BilledCost column adheres to the following requirements:
"""  # noqa: E501 -- the validator's own lines

MODEL = {
    "ModelRules": {
        "A-C-000-M": {"ValidationCriteria": {"Requirement": {"CheckFunction": "AND", "Items": [
            {"CheckFunction": "CheckModelRule", "ModelRuleId": "A-C-001-M"},
            {"CheckFunction": "CheckModelRule", "ModelRuleId": "A-C-002-C"},
        ]}}},
        "A-C-003-M": {"ValidationCriteria": {"Requirement": {"CheckFunction": "OR", "Items": [
            {"CheckFunction": "CheckValue", "ColumnName": "A", "Value": "x"},
            {"CheckFunction": "CheckModelRule", "ModelRuleId": "A-C-001-M"},
        ]}}},
        "A-C-001-M": {"ValidationCriteria": {"Requirement": {"CheckFunction": "CheckNotValue", "ColumnName": "A"}}},
        "A-C-002-C": {"ValidationCriteria": {"Requirement": {"CheckFunction": "CheckNotValue", "ColumnName": "B"}}},
    }
}  # fmt: skip


def test_report_is_parsed_and_cross_checked_against_its_totals() -> None:
    statuses, failures = parse_report(REPORT)
    assert statuses == {
        "BilledCost-C-001-M": "PASS",
        "BilledCost-C-005-C": "FAIL",
        "BilledCost-C-000-M": "FAIL",
        "Tags-C-000-C": "SKIPPED",
    }
    assert [(f.rule, f.violations) for f in failures] == [("BilledCost-C-005-C", "615"), ("BilledCost-C-000-M", "1")]
    assert failures[0].message == "BilledCost MUST equal '0'."
    assert failures[0].must_satisfy.startswith("BilledCost MUST be 0 for charges")
    assert failures[0].samples == ["BilledCost='8e-07'", "BilledCost='1.60599e-05'"]
    with pytest.raises(ValidatorOutputError, match=r"report totals \(5, 1, 2, 1\) don't match .* \(4, 1, 2, 1\)"):
        parse_report(REPORT.replace("Total: 4", "Total: 5"))
    with pytest.raises(ValidatorOutputError, match="failures section"):
        parse_report(REPORT.replace("- BilledCost-C-000-M: violations=1;", "- BilledCost-C-009-M: violations=1;"))


def test_composites_are_accepted_only_through_documented_children() -> None:
    composites = composite_children(MODEL)
    assert composites == {"A-C-000-M": ({"A-C-001-M", "A-C-002-C"}, False), "A-C-003-M": ({"A-C-001-M"}, True)}

    def verdicts(failed: list[str], defects: dict[str, set[str]], case: str = "demo") -> dict[str, str]:
        failures = [Failure(rule, "1", "") for rule in failed]
        judge(case, failures, defects, composites)
        return {f.rule: f.accepted_as for f in failures}

    documented = {"A-C-001-M": {"all cases"}}
    assert verdicts(["A-C-001-M", "A-C-000-M"], documented) == {
        "A-C-001-M": "documented",
        "A-C-000-M": "composite of documented",
    }
    # An undocumented child keeps its parent failing; so do a composite's own inline checks.
    assert verdicts(["A-C-001-M", "A-C-002-C", "A-C-000-M"], documented)["A-C-000-M"] == ""
    assert verdicts(["A-C-001-M", "A-C-003-M"], documented)["A-C-003-M"] == ""
    # A defect documented for one case does not excuse another case.
    assert verdicts(["A-C-002-C"], {"A-C-002-C": {"openai_edge_cases"}}) == {"A-C-002-C": ""}
    assert verdicts(["A-C-002-C"], {"A-C-002-C": {"openai_edge_cases"}}, "openai_edge_cases") == {
        "A-C-002-C": "documented"
    }


def test_defects_doc_names_known_cases_and_the_validator_defects(tmp_path: Path) -> None:
    defects = documented_defects(DEFECTS_DOC)
    for rule in (
        "BilledCost-C-005-C",
        "InvoiceId-C-004-C",
        "InvoiceId-C-005-C",
        "CommitmentDiscountStatus-C-004-C",
        "CapacityReservationStatus-C-004-C",
    ):
        assert defects[rule] == {"all cases"}
    assert defects["ListCost-C-009-C"] == {"focus_official_sample"}
    bad = tmp_path / "defects.md"
    bad.write_text("### BilledCost-C-005-C (demo, no_such_case)\n")
    with pytest.raises(ValueError, match=r"BilledCost-C-005-C names unknown case\(s\) \['no_such_case'\]"):
        documented_defects(bad)


def test_cases_claim_only_known_applicability_criteria() -> None:
    assert len(ALL_CRITERIA) == 18
    for case in CASES.values():
        assert set(case.criteria) <= set(ALL_CRITERIA)
    assert "VIRTUAL_CURRENCY_SUPPORTED" not in CASES["demo"].criteria
    with pytest.raises(ValueError, match="unknown applicability criteria"):
        criteria_except("TELEPATHY_SUPPORTED")


EXPLAIN = """
📋 ListUnitPrice-C-005-C
   Type: leaf
   Check: check_not_value
   MustSatisfy: ListUnitPrice MUST NOT be null when ChargeCategory is "Usage" or "Purchase" and ChargeClass is not "Correction".
   SQL:
     WITH invalid AS (
     SELECT 1
     FROM focus_data
     WHERE ((ListUnitPrice IS NULL)) AND ((((ChargeClass IS NOT NULL AND ChargeClass <> 'Correction')) AND ((ChargeCategory = 'Usage') OR (ChargeCategory = 'Purchase')))) )
     SELECT COUNT(*) AS violations, CASE WHEN COUNT(*) > 0 THEN 'ListUnitPrice MUST NOT be NULL.' END AS error_message
     FROM invalid

📋 ListUnitPrice-C-000-C
   Type: composite
   Children: 4 rules

📋 ChargeCategory-C-001-M
   SQL:
     WITH invalid AS ( SELECT 1 FROM focus_data WHERE ChargeCategory IS NULL ) SELECT COUNT(*) AS violations FROM invalid
"""  # noqa: E501 -- the validator's own line


def test_null_safe_rewrite_and_recheck(tmp_path: Path) -> None:
    sql = nullsafe.parse_explain(EXPLAIN)
    assert sorted(sql) == ["ChargeCategory-C-001-M", "ListUnitPrice-C-005-C"]
    assert "(ChargeClass IS DISTINCT FROM 'Correction')" in nullsafe.null_safe(sql["ListUnitPrice-C-005-C"])
    assert nullsafe.null_safe(sql["ChargeCategory-C-001-M"]) == sql["ChargeCategory-C-001-M"]
    data = tmp_path / "focus.parquet"
    pl.DataFrame(
        {
            "ChargeCategory": ["Usage", "Usage", "Tax", "Usage"],
            "ChargeClass": [None, "Correction", None, None],
            "ListUnitPrice": [None, None, None, 1.5],
        }
    ).write_parquet(data)
    # Only the ordinary Usage row without a price: corrections and Tax are outside the rule.
    found = nullsafe.recheck(data, sql, ["ListUnitPrice-C-005-C", "ChargeCategory-C-001-M"])
    assert found == [nullsafe.NullSafeFinding("ListUnitPrice-C-005-C", 1, "ListUnitPrice MUST NOT be NULL.")]
    # A check the validator did not pass (failed or skipped) is not re-run.
    assert nullsafe.recheck(data, sql, ["ChargeCategory-C-001-M"]) == []

"""Run the FinOps Foundation's focus-validator on every conformance case; fail on any undocumented failure.

For each gating case of ``conformance.export.CASES`` (``GATING``; the others when named) this writes
the case's focus_costs as Parquet, runs ``focus-validator`` 2.2.1 (its own Python 3.12 venv, built by
``make conformance``) against FOCUS 1.2 offline (``--block-download``) with the case's applicability
criteria, and parses its console report;
then ``conformance.nullsafe`` re-runs, NULL-safe, the passed checks whose conditions never match NULL.
A failing rule is accepted only when ``docs/validator-defects.md`` documents it for that case (a
``### <RuleId> (<cases>)`` heading, ``all cases`` or case names), or when it is a composite rule whose
failing child rules are all documented. Documented rules that no longer fail are reported as stale.

The validator opens ``focus_validator/rules/currency_codes.csv`` relative to its working directory,
so it runs from ``<out>/validator-cwd`` holding a ``focus_validator`` link to the installed package.

Usage: ``python -m conformance.run --validator .cogs/validator-venv/bin/focus-validator [CASE ...]``
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conformance import nullsafe
from conformance.export import CASES, GATING, write

ROOT = Path(__file__).resolve().parents[1]
DEFECTS_DOC = ROOT / "docs" / "validator-defects.md"
DEFAULT_OUT = ROOT / ".cogs" / "conformance"
FOCUS_VERSION = "1.2"
MODEL_FILE = "model-1.2.0.1.json"
VALIDATOR_TIMEOUT_SECONDS = 240

ALL_CASES = "all cases"
_DEFECT_HEADING = re.compile(r"^###\s+(?P<rule>[A-Za-z]+-[A-Z]-\d{3}-[MCOR])\s+\((?P<cases>[^)]+)\)\s*$")
_STATUS_LINE = re.compile(r"^\S+\s+(?P<rule>[A-Za-z]+-[A-Z]-\d{3}-[MCOR]): (?P<status>PASS|FAIL|SKIPPED)\b")
_TOTALS = re.compile(r"^Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)$")
_FAILURE = re.compile(r"^- (?P<rule>[A-Za-z]+-[A-Z]-\d{3}-[MCOR]): violations=(?P<violations>[^;]*); (?P<message>.*)$")


class ValidatorOutputError(RuntimeError):
    """focus-validator crashed or printed a report this parser does not understand."""


VALIDATOR, NULL_SAFE = "focus-validator", "null-safe re-run"


@dataclass
class Failure:
    rule: str
    violations: str
    message: str
    must_satisfy: str = ""
    samples: list[str] = field(default_factory=list)
    found_by: str = VALIDATOR  # or NULL_SAFE: the validator passed it, its NULL-safe SQL found rows
    composite: bool = False  # an AND/OR of other rules: it fails because (some of) those fail
    accepted_as: str = ""  # "documented" | "composite of documented" | "" (not accepted)


@dataclass
class CaseResult:
    case: str
    rows: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def unexpected(self) -> list[Failure]:
        return [f for f in self.failures if not f.accepted_as]

    @property
    def unexpected_rules(self) -> list[Failure]:
        """Unexpected failures of rules that check data themselves (composites only echo their children)."""
        return [f for f in self.unexpected if not f.composite]

    @property
    def ok(self) -> bool:
        return not self.error and not self.unexpected


# --- the validator's report -----------------------------------------------------------------------


def parse_report(text: str) -> tuple[dict[str, str], list[Failure]]:
    """Rule id → PASS/FAIL/SKIPPED, and the failures with their details, from the console report."""
    statuses: dict[str, str] = {}
    failures: list[Failure] = []
    totals: tuple[int, ...] | None = None
    in_failures = False
    for line in text.splitlines():
        if line.strip() == "--- Failures ---":
            in_failures = True
        elif in_failures and (m := _FAILURE.match(line)):
            failures.append(Failure(m["rule"], m["violations"], m["message"]))
        elif in_failures and failures and line.startswith("  MustSatisfy: "):
            failures[-1].must_satisfy = line.removeprefix("  MustSatisfy: ")
        elif in_failures and failures and line.startswith("    "):
            failures[-1].samples.append(line.strip())
        elif not in_failures and (m := _STATUS_LINE.match(line)):
            statuses[m["rule"]] = m["status"]
        elif m := _TOTALS.match(line):
            totals = tuple(int(g) for g in m.groups())
    counted = (len(statuses), *(sum(s == k for s in statuses.values()) for k in ("PASS", "FAIL", "SKIPPED")))
    if totals is None or totals != counted:
        raise ValidatorOutputError(f"report totals {totals} don't match the rule lines parsed {counted}")
    failing = sorted(r for r, s in statuses.items() if s == "FAIL")
    if failing != sorted(f.rule for f in failures):
        raise ValidatorOutputError("the failures section does not list exactly the rules marked FAIL")
    return statuses, failures


def validator_package(validator: Path) -> Path:
    """The installed ``focus_validator`` package beside the ``focus-validator`` script of a venv."""
    python = validator.with_name("python")
    found = subprocess.run(
        [str(python), "-c", "import focus_validator, pathlib; print(pathlib.Path(focus_validator.__file__).parent)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def validator_cwd(out_dir: Path, package: Path) -> Path:
    """A working directory where ``focus_validator/rules/currency_codes.csv`` resolves to the package's file."""
    cwd = out_dir / "validator-cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    link = cwd / "focus_validator"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(package, target_is_directory=True)
    return cwd


def run_validator(validator: Path, cwd: Path, data: Path, criteria: Iterable[str]) -> str:
    command = [
        str(validator),
        "--data-file",
        str(data.resolve()),
        "--validate-version",
        FOCUS_VERSION,
        "--block-download",
        "--show-violations",
        "--applicability-criteria",
        ",".join(criteria),
    ]
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=VALIDATOR_TIMEOUT_SECONDS, encoding="utf-8"
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ValidatorOutputError(f"focus-validator exited with {done.returncode}:\n{tail}")
    return done.stdout


# --- what docs/validator-defects.md accepts -------------------------------------------------------


def documented_defects(doc: Path) -> dict[str, set[str]]:
    """Rule id → the cases it is documented for (``all cases`` for validator defects)."""
    defects: dict[str, set[str]] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        if m := _DEFECT_HEADING.match(line):
            cases = {c.strip() for c in m["cases"].split(",")}
            unknown = cases - set(CASES) - {ALL_CASES}
            if unknown:
                raise ValueError(f"{doc}: {m['rule']} names unknown case(s) {sorted(unknown)}")
            defects.setdefault(m["rule"], set()).update(cases)
    return defects


def composite_children(model: dict[str, Any]) -> dict[str, tuple[set[str], bool]]:
    """Composite rule id → (model rules it references, whether it also has checks of its own)."""

    def walk(node: Any, refs: set[str]) -> bool:
        if isinstance(node, list):
            return any([walk(n, refs) for n in node])  # a list, not a generator: every branch must be walked
        if not isinstance(node, dict):
            return False
        function = node.get("CheckFunction")
        if function == "CheckModelRule":
            refs.add(node["ModelRuleId"])
            return False
        if function in ("AND", "OR"):
            return walk(node.get("Items", []), refs)
        return True  # an inline check

    composites = {}
    for rule_id, rule in model["ModelRules"].items():
        requirement = rule.get("ValidationCriteria", {}).get("Requirement", {})
        if requirement.get("CheckFunction") in ("AND", "OR"):
            refs: set[str] = set()
            own_checks = walk(requirement, refs)
            composites[rule_id] = (refs, own_checks)
    return composites


def judge(
    case: str, failures: list[Failure], defects: dict[str, set[str]], composites: dict[str, tuple[set[str], bool]]
) -> None:
    """Mark each failure accepted when documented for ``case``, or a composite failing only through those."""
    failed = {f.rule for f in failures}
    accepted: dict[str, str] = {}

    def acceptance(rule: str, seen: frozenset[str] = frozenset()) -> str:
        if rule in accepted:
            return accepted[rule]
        verdict = ""
        if defects.get(rule, set()) & {case, ALL_CASES}:
            verdict = "documented"
        elif rule in composites and rule not in seen:
            children, own_checks = composites[rule]
            failing_children = children & failed
            if failing_children and not own_checks and all(acceptance(c, seen | {rule}) for c in failing_children):
                verdict = "composite of documented"
        accepted[rule] = verdict
        return verdict

    for failure in failures:
        failure.accepted_as = acceptance(failure.rule)
        failure.composite = failure.rule in composites and not composites[failure.rule][1]


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What every case is checked with: the validator, where it runs, the rules and the documented defects."""

    validator: Path
    cwd: Path
    out_dir: Path
    scratch: Path
    model: dict[str, Any]
    defects: dict[str, set[str]]

    def must_satisfy(self, rule: str) -> str:
        return str(self.model["ModelRules"].get(rule, {}).get("ValidationCriteria", {}).get("MustSatisfy", ""))


def check_case(name: str, ctx: Context) -> CaseResult:
    started = time.monotonic()
    result = CaseResult(name)
    case = CASES[name]
    try:
        frame = case.build(ctx.scratch / name)
        result.rows = frame.height
        data = write(frame, ctx.out_dir, name)
        report = run_validator(ctx.validator, ctx.cwd, data, case.criteria)
        (ctx.out_dir / f"{name}.validator.txt").write_text(report, encoding="utf-8")
        statuses, result.failures = parse_report(report)
        passed = [rule for rule, status in statuses.items() if status == "PASS"]
        sql = nullsafe.explain(ctx.validator, ctx.cwd, FOCUS_VERSION, case.criteria)
        for finding in nullsafe.recheck(data, sql, passed):
            result.failures.append(
                Failure(finding.rule, str(finding.violations), finding.message, ctx.must_satisfy(finding.rule),
                        found_by=NULL_SAFE)
            )  # fmt: skip
    except Exception as exc:  # a case that can't be built or validated fails, with the reason, and the run goes on
        result.error = f"{type(exc).__name__}: {exc}"
    else:
        result.passed, result.failed, result.skipped = (
            sum(s == k for s in statuses.values()) for k in ("PASS", "FAIL", "SKIPPED")
        )
        judge(name, result.failures, ctx.defects, composite_children(ctx.model))
    result.seconds = time.monotonic() - started
    return result


def print_summary(results: list[CaseResult], defects: dict[str, set[str]]) -> None:
    print(f"\nfocus-validator 2.2.1, FOCUS {FOCUS_VERSION}, one line per case")
    print("(fail: rules the validator failed, composites included; null-safe: false passes the NULL-safe")
    print(" re-run caught; documented: failures docs/validator-defects.md accepts; unexpected: the other rules)")
    header = f"{'case':<24}{'rows':>7}{'pass':>6}{'fail':>6}{'skip':>6}{'null-safe':>11}{'documented':>12}"
    print(f"{header}{'unexpected':>12}{'s':>6}")
    for r in results:
        null_safe = sum(f.found_by == NULL_SAFE for f in r.failures)
        documented = len(r.failures) - len(r.unexpected)
        print(
            f"{r.case:<24}{r.rows:>7}{r.passed:>6}{r.failed:>6}{r.skipped:>6}{null_safe:>11}{documented:>12}"
            f"{len(r.unexpected_rules) if not r.error else 'ERROR':>12}{r.seconds:>6.1f}"
        )
    for r in results:
        if r.error:
            print(f"\n{r.case}: ERROR {r.error}")
        for f in r.unexpected_rules:
            by = " (null-safe re-run)" if f.found_by == NULL_SAFE else ""
            print(f"\n{r.case}: UNEXPECTED {f.rule}{by}: violations={f.violations}; {f.message}")
            if f.must_satisfy:
                print(f"    spec: {f.must_satisfy}")
            for sample in f.samples[:2]:
                print(f"    e.g. {sample}")
        composites = [f.rule for f in r.unexpected if f.composite]
        if composites:
            print(f"\n{r.case}: composite rules failing through those: {', '.join(sorted(composites))}")
    ran = {r.case for r in results}
    if all(not r.error for r in results) and ran >= set(GATING):
        fired = {(f.rule, r.case) for r in results for f in r.failures}
        for rule, cases in sorted(defects.items()):
            scope = ran if ALL_CASES in cases else cases
            if not any((rule, c) in fired for c in scope):
                print(f"\nnote: {rule} is documented for {', '.join(sorted(cases))} but failed in none of them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validator", type=Path, required=True, help="focus-validator script of its venv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the files and reports go")
    parser.add_argument("--defects", type=Path, default=DEFECTS_DOC, help="the documented validator defects")
    parser.add_argument(
        "cases", nargs="*", metavar="CASE", help=f"default: {', '.join(GATING)}; also: {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    validator = args.validator.absolute()  # it runs from another working directory
    package = validator_package(validator)
    results = []
    with tempfile.TemporaryDirectory(prefix="cogs-conformance-") as scratch:
        ctx = Context(
            validator=validator,
            cwd=validator_cwd(args.out, package),
            out_dir=args.out,
            scratch=Path(scratch),
            model=json.loads((package / "rules" / MODEL_FILE).read_text(encoding="utf-8")),
            defects=documented_defects(args.defects),
        )
        for name in args.cases or GATING:
            print(f"{name}: {CASES[name].about} …", flush=True)
            results.append(check_case(name, ctx))
    (args.out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    print_summary(results, ctx.defects)
    ok = all(r.ok for r in results)
    print(f"\nconformance: {'PASSED' if ok else 'FAILED'} (reports in {args.out})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Turn a Tempest run (its subunit v2 stream) into the interop summary JSON, and judge it.

The verdict: the stage fails on any failure of a test that does not need block storage, and on any
test listed as an expected failure that passes (the list must then shrink). Skipped tests keep
Tempest's skip reason. Reading subunit needs python-subunit (the Tempest venv has it); everything
else is plain Python so the unit tests run it in the normal suite.

    python -m tests.interop.results --subunit run.subunit --listed listed.txt --out summary.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.interop.targets import Target, load_expected_failures, load_targets, parse_listed, resolve, split_name

# A failure or skip of a whole class is reported under this id, not under each test.
_CLASS_FIXTURE = re.compile(r"^(?P<fixture>setUpClass|tearDownClass) \((?P<cls>[\w.]+)\)$")
DETAIL_CHARS = 3000


@dataclass(frozen=True)
class Outcome:
    """One test id from the stream: ``status`` is subunit's (success, fail, skip, xfail, uxsuccess)."""
    test_id: str
    status: str
    detail: str = ""


@dataclass
class Summary:
    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    class_errors: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_json(self, guideline: str) -> dict[str, Any]:
        counts = Counter(t["result"] for t in self.tests)
        skipped = Counter(t["detail"] for t in self.tests if t["result"] == "skipped")
        return {
            "guideline": guideline,
            "ok": self.ok,
            "verdict": self.reasons,
            "counts": {"targets": len(self.tests) + len(self.missing), "missing_from_tempest": len(self.missing),
                       "passed": counts["passed"], "failed": counts["failed"],
                       "expected_failures": counts["expected failure"],
                       "unexpected_passes": counts["unexpected pass"], "skipped": counts["skipped"],
                       "not_run": counts["not run"]},
            "failed": {t["name"]: t["cause"] for t in self.tests if t["result"] == "failed"},
            "skip_reasons": dict(skipped.most_common()),
            "missing_from_tempest": self.missing,
            "class_errors": self.class_errors,
            "tests": self.tests,
        }


_EXC_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Exceptions)|[\w.]*MismatchError|Details)\b:?")


def _short(text: str) -> str:
    """Head and tail of a traceback: schema errors say what is wrong at the top, assertions at the end."""
    text = text.strip()
    if len(text) <= DETAIL_CHARS:
        return text
    half = DETAIL_CHARS // 2
    return text[:half] + "\n...\n" + text[-half:]


def cause(detail: str) -> str:
    """One line that says why: the HTTP ``Details:`` line, else the first exception line, else the last line."""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    found = [line for line in lines if _EXC_LINE.match(line)]
    details = [line for line in found if line.startswith("Details")]
    pick = details[0] if details else (found[0] if found else (lines[-1] if lines else ""))
    return pick[:400]


def judge(outcomes: list[Outcome], targets: list[Target], listed: dict[str, list[str]],
          expected: set[str]) -> Summary:
    """Match the outcomes to the targets (by idempotent id) and decide whether the stage passes."""
    by_name: dict[str, Outcome] = {}
    class_fixtures: dict[str, list[Outcome]] = {}
    for o in outcomes:
        m = _CLASS_FIXTURE.match(o.test_id)
        if m is not None:
            class_fixtures.setdefault(m["cls"], []).append(o)
            continue
        name, _ = split_name(o.test_id)
        by_name[name] = o
    summary = Summary()
    for t in targets:
        name = resolve(t, listed)
        if name is None:
            summary.missing.append(t.name)
            continue
        cls = name.rsplit(".", 1)[0]
        status, detail = _status_of(by_name.get(name), class_fixtures.get(cls, []))
        listed_xfail = t.idempotent_id in expected
        result = {"success": "passed", "fail": "failed", "skip": "skipped", "xfail": "expected failure",
                  "uxsuccess": "unexpected pass"}.get(status, "not run")
        if listed_xfail and result == "failed":
            result = "expected failure"
        elif listed_xfail and result == "passed":
            result = "unexpected pass"
        summary.tests.append({"name": name, "guideline_name": t.name, "idempotent_id": t.idempotent_id,
                              "capability": t.capability, "volume": t.volume, "flagged": t.flagged,
                              "listed_expected_failure": listed_xfail, "result": result,
                              "cause": cause(detail) if result in ("failed", "expected failure") else "",
                              "detail": _short(detail)})
        # Block storage is served since issue 10: a volume test counts like any other (only a listed
        # expected failure may fail).
        if result == "failed":
            summary.ok = False
            summary.reasons.append(f"failed: {name}")
        elif result == "unexpected pass":
            summary.ok = False
            summary.reasons.append(f"passed but listed as an expected failure (remove it from the list): {name}")
        elif result == "not run":
            summary.ok = False
            summary.reasons.append(f"not run (no result in the stream): {name}")
    for cls, fixtures in sorted(class_fixtures.items()):
        for f in fixtures:
            if f.status == "fail" and f.test_id.startswith("tearDownClass"):
                summary.class_errors.append({"id": f.test_id, "cause": cause(f.detail), "detail": _short(f.detail)})
                summary.ok = False
                summary.reasons.append(f"class cleanup failed: {f.test_id}")
    return summary


def _status_of(own: Outcome | None, fixtures: list[Outcome]) -> tuple[str, str]:
    if own is not None:
        return own.status, own.detail
    # A test without its own result: its class was skipped or failed in setUpClass.
    for f in fixtures:
        if f.test_id.startswith("setUpClass") and f.status in ("skip", "fail"):
            return f.status, f.detail
    return "none", ""


def read_subunit(path: Path) -> list[Outcome]:
    """Outcomes from a subunit v2 file (needs python-subunit and testtools: run in the Tempest venv)."""
    import subunit
    import testtools

    outcomes: list[Outcome] = []

    def on_test(test: dict[str, Any]) -> None:
        details = test.get("details", {})
        detail = ""
        for key in ("reason", "traceback"):
            if key in details:
                detail = details[key].as_text()
                break
        outcomes.append(Outcome(test_id=test["id"], status=test["status"], detail=detail))

    with path.open("rb") as fh:
        stream = subunit.ByteStreamToStreamResult(fh, non_subunit_name="stdout")
        result = testtools.StreamToDict(on_test)
        result.startTestRun()
        try:
            stream.run(result)
        finally:
            result.stopTestRun()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--subunit", type=Path, required=True)
    p.add_argument("--listed", type=Path, required=True, help="`tempest run --list-tests` output")
    p.add_argument("--include-list", type=Path, help="judge only the targets that were selected to run")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    targets = load_targets()
    listed = parse_listed(args.listed.read_text().splitlines())
    if args.include_list is not None:
        selected = [re.compile(r) for r in args.include_list.read_text().split()]
        targets = [t for t in targets if (name := resolve(t, listed)) is None
                   or any(r.match(name + "[") for r in selected)]
    summary = judge(read_subunit(args.subunit), targets, listed, load_expected_failures())
    data = summary.as_json("2020.06")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    c = data["counts"]
    print(f"interop 2020.06: {c['passed']} passed, {c['failed']} failed, {c['expected_failures']} expected "
          f"failures, {c['unexpected_passes']} unexpected passes, {c['skipped']} skipped, {c['not_run']} not run, "
          f"{c['missing_from_tempest']} not in this Tempest; summary in {args.out}")
    for reason in data["verdict"]:
        print(f"  {reason}")
    # CI shows only the tail of the log: end with the distinct causes, most frequent first.
    causes = Counter(t["cause"] for t in data["tests"] if t["result"] == "failed")
    for text, n in causes.most_common(8):
        print(f"  cause ({n} tests): {text}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())

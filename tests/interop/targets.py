"""Our target list, the expected failures, and matching both against what Tempest really has.

Tempest names a test ``module.Class.test_name[id-<uuid>,attr,...]`` in ``tempest run --list-tests``.
The guideline's names are years old, so we match on the idempotent id and run the name Tempest
uses today, anchored with ``\\[`` so ``test_list_servers`` does not also select ``test_list_servers_x``.
This module only needs the standard library: it runs in the Tempest venv and in the unit tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = HERE / "targets-2020.06.json"
EXPECTED_FAILURES = HERE / "expected-failures.txt"

_LISTED = re.compile(r"^(?P<name>[\w.]+)\[(?P<attrs>[^\]]*)\]\s*$")
_ID = re.compile(r"^id-(?P<uuid>[0-9a-f-]{36})$")


@dataclass(frozen=True)
class Target:
    name: str  # as the guideline names it
    idempotent_id: str
    capability: str
    flagged: bool
    volume: bool  # needs block storage (a volume capability or compute-volume-attach)


def load_targets(path: Path = TARGETS) -> list[Target]:
    data = json.loads(path.read_text())
    return [Target(name=t["name"], idempotent_id=t["idempotent_id"], capability=t["capability"],
                   flagged=bool(t["flagged"]), volume=bool(t["volume"])) for t in data["tests"]]


def load_expected_failures(path: Path = EXPECTED_FAILURES, targets: list[Target] | None = None) -> set[str]:
    """Idempotent ids listed as expected to fail: one per line, first word; ``#`` starts a comment.

    Only tests that need block storage may be listed (policy, docs/reference/conformance.md).
    """
    by_id = {t.idempotent_id: t for t in (targets if targets is not None else load_targets())}
    ids: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        uuid = line.split()[0]
        target = by_id.get(uuid)
        if target is None:
            raise ValueError(f"{path.name}: {uuid} is not a target test")
        if not target.volume:
            raise ValueError(f"{path.name}: {target.name} does not need block storage, so it may not be "
                             "listed as an expected failure")
        ids.add(uuid)
    return ids


def parse_listed(lines: list[str]) -> dict[str, list[str]]:
    """``tempest run --list-tests`` output -> {idempotent id: test names as Tempest runs them}.

    One id can name several tests: subclasses inherit test methods (``ServersTestJSON`` and
    ``ServersTestBootFromVolume`` share ``test_list_servers``), so ``resolve`` picks one.
    """
    found: dict[str, list[str]] = {}
    for line in lines:
        name, uuid = split_name(line)
        if uuid is not None:
            found.setdefault(uuid, []).append(name)
    return found


def resolve(target: Target, listed: dict[str, list[str]]) -> str | None:
    """The test Tempest runs today for ``target``: its own name if it still exists, else the one
    test with its id, else the one whose class name is the guideline's (renamed module)."""
    names = listed.get(target.idempotent_id, [])
    if not names:
        return None
    if target.name in names or len(names) == 1:
        return target.name if target.name in names else names[0]
    cls = target.name.rsplit(".", 2)[-2]
    same_class = [n for n in names if n.rsplit(".", 2)[-2] == cls]
    return sorted(same_class or names)[0]


def split_name(test_id: str) -> tuple[str, str | None]:
    """A subunit/listing test id -> (name without attributes, idempotent id or None)."""
    m = _LISTED.match(test_id.strip())
    if m is None:
        return test_id.strip(), None
    for attr in m["attrs"].split(","):
        idm = _ID.match(attr.strip())
        if idm is not None:
            return m["name"], idm["uuid"]
    return m["name"], None


def include_list(targets: list[Target], listed: dict[str, list[str]]) -> tuple[list[str], list[Target]]:
    """The ``--include-list`` regexes for the targets Tempest has, and the targets it no longer has."""
    regexes: list[str] = []
    missing: list[Target] = []
    for t in targets:
        name = resolve(t, listed)
        if name is None:
            missing.append(t)
        else:
            regexes.append("^" + re.escape(name) + r"\[")
    return sorted(set(regexes)), missing


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(description="Print the --include-list for the targets Tempest has.")
    p.add_argument("--listed", type=Path, required=True, help="`tempest run --list-tests` output")
    p.add_argument("--regex", default=".", help="keep only the tests whose name matches (debugging)")
    args = p.parse_args(argv)
    regexes, missing = include_list(load_targets(), parse_listed(args.listed.read_text().splitlines()))
    keep = re.compile(args.regex)
    for r in regexes:
        if keep.search(r.replace("\\", "")):
            print(r)
    for t in missing:
        print(f"not in this Tempest: {t.name} (id-{t.idempotent_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

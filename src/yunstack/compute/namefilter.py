"""The ``name`` filter of ``GET /servers``: a user's regular expression, matched in linear time.

Nova treats ``name`` as a regular expression.  Python's ``re`` backtracks, so a pattern like
``(a+)+$`` against a long name runs for minutes and stalls a worker for everyone.  RE2 (Google's
engine, ``google-re2``) compiles to an automaton and guarantees time linear in the input, whatever
the pattern; it refuses what it cannot do in linear time (back-references, look-around), which
becomes a 400 here.  docs/explanation/regex-filters.md says why RE2 and not a timeout.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

from yunstack.errors import BadRequest

# A compiled program bigger than this is refused (RE2 fails the compile): bounds memory per request.
MAX_PROGRAM_BYTES = 8 << 20


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a user's bad pattern is a 400, not a line on the server's stderr
    options.never_capture = True  # we only ask "does it match"; groups cost memory and time
    options.max_mem = MAX_PROGRAM_BYTES
    return options


def name_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate that says whether a name contains a match of ``pattern`` (``re.search`` semantics)."""
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise BadRequest("Invalid name filter {name!r}: {why} (patterns are RE2 syntax: no back-references "
                         "or look-around)", name=pattern, why=why) from None
    return lambda name: compiled.search(name) is not None

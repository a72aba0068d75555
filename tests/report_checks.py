"""Shared by the tests that parse a generated report back (test_report, test_analysis_report,
test_generalisation): every line with a number must match a check, and every digit must
matter to some check."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# (name, regular expression for a whole line, check of the match, lines expected)
Pattern = tuple[str, str, Callable[[re.Match], None], int]


def match_lines(text: str, patterns: Sequence[Pattern]) -> None:
    """Run each line holding a digit through the first pattern it matches; fail on a
    line no pattern covers and on a pattern matched a different number of times."""
    counts = {name: 0 for name, *_ in patterns}
    for line in text.splitlines():
        if not re.search(r"\d", line):
            continue
        matched = [(name, m, fn) for name, rx, fn, _ in patterns if (m := re.fullmatch(rx, line))]
        assert matched, f"a line with numbers that no check covers: {line!r}"
        name, m, fn = matched[0]
        counts[name] += 1
        fn(m)
    assert counts == {name: n for name, _, _, n in patterns}, counts


def assert_every_digit_checked(text: str, check: Callable[[str], None]) -> None:
    """Change each digit in turn (by 5, mod 10): `check` must fail every time."""
    missed = []
    for match in re.finditer(r"\d", text):
        i = match.start()
        wrong = text[:i] + str((int(text[i]) + 5) % 10) + text[i + 1:]
        try:
            check(wrong)
        except Exception:  # noqa: BLE001 - any failure (a date that no longer parses too) is a catch
            continue
        missed.append(wrong[wrong.rfind("\n", 0, i) + 1:wrong.find("\n", i)])
    assert not missed, "digits changed without the check noticing:\n" + "\n".join(missed[:5])

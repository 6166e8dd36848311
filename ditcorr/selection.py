"""Parsing users' block and step selections."""
from __future__ import annotations

import re

LARGEST = 100_000  # no model has this many blocks, no schedule this many steps


def parse_indices(text: str, what: str = "index") -> list[int]:
    """Parse "15", "13, 17, 21" or "10-12" into a sorted list of distinct ints in 0..LARGEST.

    Raises ValueError naming `what` and the offending part when the text is not of that form.
    """
    found: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([0-9]+)\s*(?:-\s*([0-9]+))?", part)
        if match is None:
            raise ValueError(f"Cannot read {what} {part!r}: write numbers like '15', '13, 17, 21' or '10-12'.")
        if len(match[1]) > 6 or len(match[2] or "") > 6 or max(int(match[1]), int(match[2] or 0)) > LARGEST:
            raise ValueError(f"The {what} numbers in {part!r} are too large (at most {LARGEST}).")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ValueError(f"Range {part!r} of {what}s runs backwards: write '{high}-{low}'.")
        found.update(range(low, high + 1))
    return sorted(found)

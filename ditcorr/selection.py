"""Parsing users' block and step selections."""
from __future__ import annotations

import re


def parse_indices(text: str, what: str = "index") -> list[int]:
    """Parse "15", "13, 17, 21" or "10-12" into a sorted list of distinct ints.

    Raises ValueError with the offending part when the text is not of that form.
    """
    found: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if match is None:
            raise ValueError(f"Cannot read {what} {part!r}: write numbers like '15', '13, 17, 21' or '10-12'.")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ValueError(f"Range {part!r} runs backwards: write '{high}-{low}'.")
        found.update(range(low, high + 1))
    return sorted(found)

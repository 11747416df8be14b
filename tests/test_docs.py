"""The README and docs/ speak to users: no temporary paths, no folders a clone does not have, no
internal issue numbers or work sessions."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BANNED = {
    "a temporary path": r"(?<![\w.])/(?:var/)?tmp/|pytest-of-",
    "a folder outside the clone": r"\.\./shared|(?<![\w.])/work/",
    "an internal issue number": r"\bissues?\s*#?\d+|(?<![\w/&(#])#\d+\b|\bthe issue'?s?\b",
    "a work session": r"\bsession \d+|\bsession-\d+|\b(?:this|earlier|previous) session\b",
}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_name_no_temporary_paths_shared_folders_or_issue_numbers(page):
    text = page.read_text(encoding="utf-8")
    found = [f"{page.name}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)!r}"
             for what, pattern in BANNED.items() for m in re.finditer(pattern, text, re.I)]
    assert not found, "\n".join(found)


def test_the_patterns_catch_what_they_should():
    bad = ["see /tmp/h5/phantom", "../shared/data/iu_xray", "issue 5's bars", "fixed in #12",
           "measured in session 4", "the issue's target", "earlier in this session"]
    for line in bad:
        assert any(re.search(p, line, re.I) for p in BANNED.values()), line
    fine = ["runs/demo/phantom", "colour #1f7a44", "[link](#use-your-own-data)", "a known problem"]
    for line in fine:
        assert not any(re.search(p, line, re.I) for p in BANNED.values()), line

"""IU X-ray (Open-i) as the field uses it: all reports, or R2Gen's split with findings only."""
from __future__ import annotations

from functools import lru_cache

from cxrgen.data.layouts.openi import read_openi
from cxrgen.data.studies import Study


@lru_cache(maxsize=1)
def _all_reports() -> tuple[Study, ...]:
    return tuple(read_openi())


def load_iu_reports() -> list[Study]:
    """All 3,955 real Open-i reports (text only), with R2Gen's split where the study is in it."""
    return list(_all_reports())


def load_iu_xray(split: str | None = None) -> list[Study]:
    """`iu-xray`: R2Gen's split (2,069 / 296 / 590 studies with non-empty findings), in R2Gen's order.

    The findings text is the report's FINDINGS section, which is what R2Gen's annotation holds.
    """
    from cxrgen.data.layouts.openi import r2gen_split

    order = r2gen_split()
    studies = [s for s in _all_reports() if s.id in order]
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}: use train, val or test")
        studies = [s for s in studies if s.split == split]
    rank = {sid: i for i, sid in enumerate(order)}
    return sorted(studies, key=lambda s: rank[s.id])

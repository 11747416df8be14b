"""The one record every layout reader produces."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LATERAL_VIEWS = ("LL", "LATERAL", "RL")


@dataclass
class ImageRef:
    path: Path | None  # None when the layout knows an image id but has no file for it
    view: str | None = None  # "PA", "AP", "LL", ... or None when unknown
    image_id: str | None = None

    @property
    def is_lateral(self) -> bool:
        return (self.view or "").upper() in LATERAL_VIEWS


@dataclass
class Study:
    id: str
    split: str | None  # "train" / "val" / "test" or None
    images: list[ImageRef] = field(default_factory=list)
    findings: str = ""
    impression: str = ""
    meta: dict = field(default_factory=dict)  # indication, comparison, mesh, source layout, ...

    @property
    def frontal(self) -> ImageRef | None:
        """First non-lateral image (R2Gen convention: image 0 is frontal)."""
        return next((im for im in self.images if not im.is_lateral), None)

    @property
    def lateral(self) -> ImageRef | None:
        return next((im for im in self.images if im.is_lateral), None)

    @property
    def report(self) -> str:
        """Findings plus impression, the text CheXpert labels are computed on."""
        return " ".join(t for t in (self.findings, self.impression) if t)


@dataclass
class Problem:
    """One thing wrong with a dataset: which file (and row or id), and why."""
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"

    @property
    def kind(self) -> str:
        """The reason without its details in parentheses ("missing image (study CXR1)" -> "missing
        image"): what `cxrgen data check` groups by."""
        return self.reason.split(" (", 1)[0]

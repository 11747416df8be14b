"""cxrgen: chest X-ray report generation (research prototype, not for clinical use)."""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research prototype. The generated report is a draft for research, not a diagnosis; "
    "it must be checked by a qualified radiologist."
)

"""Datasets: layout readers that all produce `Study` records, images, reports and the tokenizer."""
from cxrgen.data.studies import ImageRef, Study

__all__ = ["ImageRef", "Study"]

"""Models: image encoders, the transformer decoder and the report generator built from them."""
from cxrgen.models.encoders import create_encoder, list_encoders
from cxrgen.models.generator import Memory, ReportGenerator, ReportModel

__all__ = ["create_encoder", "list_encoders", "Memory", "ReportGenerator", "ReportModel"]

"""Models: image encoders, the transformer decoder and the report model built from them."""
from cxrgen.models.decoder import Memory
from cxrgen.models.encoders import create_encoder, list_encoders
from cxrgen.models.generator import ReportModel

__all__ = ["create_encoder", "list_encoders", "Memory", "ReportModel"]

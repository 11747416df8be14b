"""Phantom IU X-ray: synthetic PA and lateral radiographs drawn from the real IU reports.

Each R2Gen study keeps its real findings text and split; its images show what the text says
(positive mentions drawn, uncertain ones drawn faintly, negated ones not at all), and
`images/<id>/truth.json` records exactly what was drawn. See docs/phantom.md.
"""
from cxrgen.data.phantom.render import build_phantom, render_study, render_text

__all__ = ["build_phantom", "render_study", "render_text"]

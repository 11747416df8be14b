"""Arbitrary input never crashes the data layer: it parses, or it fails with the documented error."""
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrgen.data.images import ImageError, decode_image
from cxrgen.data.layouts.openi import ReportParseError, parse_report_xml
from cxrgen.data.reports import clean_report_r2gen, extract_sections, split_sentences
from cxrgen.data.tokenizer import ReportTokenizer

TOKENIZER = ReportTokenizer.build(["no pleural effusion or pneumothorax. the heart is normal. xxxx opacity"])
_PNG = io.BytesIO()
Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(_PNG, "PNG")
PNG = _PNG.getvalue()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_functions_never_crash(text):
    for sentence in split_sentences(text):
        assert sentence.endswith(".")
    assert isinstance(clean_report_r2gen(text), str)
    assert isinstance(extract_sections(text), dict)
    ids = TOKENIZER.encode(text, max_len=32)
    assert ids[0] == TOKENIZER.bos_id and ids[-1] == TOKENIZER.eos_id and len(ids) <= 32
    assert isinstance(TOKENIZER.decode(ids), str)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_xml_parser_raises_only_parse_errors(data):
    try:
        parse_report_xml(data, "fuzz.xml")
    except ReportParseError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000))
def test_image_loader_on_arbitrary_bytes(data):
    try:
        out = decode_image(data)
        assert out.dtype == np.uint8 and out.ndim == 2
    except ImageError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(PNG) - 1), st.integers(0, 255))
def test_image_loader_on_corrupted_png(position, value):
    data = bytearray(PNG)
    data[position] = value
    try:
        decode_image(bytes(data))
    except ImageError:
        pass

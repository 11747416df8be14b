"""Arbitrary input never crashes the data layer: it parses, or it fails with the documented error."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrgen.data.images import ImageError, decode_image
from cxrgen.data.reports import clean_report_r2gen, extract_sections, split_sentences
from cxrgen.data.tokenizer import ReportTokenizer

TOKENIZER = ReportTokenizer.build(["no pleural effusion or pneumothorax. the heart is normal. xxxx opacity"])


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


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000))
def test_image_loader_on_arbitrary_bytes(data):
    try:
        out = decode_image(data)
        assert out.dtype == np.uint8 and out.ndim == 2
    except ImageError:
        pass

"""The bad-image corpus (cxrgen.testing, generated in tmp_path) through the CLI and the API.

Broken files get one clear line (CLI, exit 2) or a 4xx with a message (API) and are listed by
`cxrgen data check`; valid but odd images (16-bit, RGBA, palette, CMYK, MONOCHROME1, 1x1,
all black) get a report everywhere. Mutated PNG/JPEG/DICOM bytes only ever raise the
documented errors.
"""
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrgen.data.images import ImageError, decode_image
from cxrgen.serve.uploads import UploadError, decode_upload
from cxrgen.testing import (EXPECT_REPORT, bad_image_outcomes, dicom_bytes, encode_image, make_bad_image_corpus,
                            run_cli)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_bad_image_corpus(tmp_path_factory.mktemp("bad") / "corpus")


@pytest.fixture(scope="module")
def results(tiny_model, corpus) -> dict[str, dict]:
    return bad_image_outcomes(tiny_model, corpus, next(iter(corpus.values())).parent.parent)


def test_corpus_is_what_it_claims(corpus):
    assert corpus["zero-byte.png"].stat().st_size == 0
    assert corpus["bomb-30000x30000.png"].stat().st_size < 200_000
    assert struct.unpack(">II", corpus["bomb-30000x30000.png"].read_bytes()[16:24]) == (30_000, 30_000)  # IHDR
    assert Image.open(corpus["16-bit.png"]).mode.startswith("I")
    assert Image.open(corpus["palette.png"]).mode == "P" and Image.open(corpus["cmyk.jpg"]).mode == "CMYK"
    assert Image.open(corpus["1x1.png"]).size == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECT_REPORT))
def test_each_file_gets_a_handled_outcome(results, corpus, name):
    row = results[name]
    code, text = row["generate"]
    status, detail = row["api"]
    if EXPECT_REPORT[name]:
        assert code == 0 and text.split("\n")[0], text
        assert row["check"] == ""
        assert status == 200 and detail, detail
    else:
        assert code == 2 and "\n" not in text and "Traceback" not in text, text
        assert text.startswith("error: ") and str(corpus[name]) in text  # names the file
        assert row["check"].startswith(str(corpus[name]))
        assert 400 <= status < 500 and detail


def test_generate_names_a_bad_lateral(tiny_model, corpus):
    code, _, err = run_cli(["generate", "--model", str(tiny_model), "--image", str(corpus["1x1.png"]),
                            "--lateral", str(corpus["truncated.jpg"])])
    assert code == 2 and "truncated.jpg" in err and "Traceback" not in err


def _seeds() -> dict[str, bytes]:
    noise = np.random.default_rng(0).integers(0, 256, (48, 40), np.uint8)
    return {"png": encode_image(Image.fromarray(noise), "PNG"), "jpg": encode_image(Image.fromarray(noise), "JPEG"),
            "png16": encode_image(Image.fromarray(noise.astype(np.uint16) * 250), "PNG"), "dicom": dicom_bytes(),
            "dicom1": dicom_bytes("MONOCHROME1")}


SEEDS = _seeds()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2**32 - 1))
def test_mutated_images_raise_only_documented_errors(kind, seed):
    """Byte flips, cuts and insertions in valid files: the CLI's and the API's decoders fail cleanly."""
    rng, data = random.Random(seed), bytearray(SEEDS[kind])
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(data))
        op = rng.random()
        if op < 0.6:
            data[pos] = rng.randrange(256)
        elif op < 0.8:
            del data[pos:pos + rng.randint(1, 50)]
        else:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    for decode, error in ((decode_image, ImageError), (lambda d: decode_upload("frontal", d, 10**7), UploadError)):
        try:
            img = decode(bytes(data))
        except error:
            continue
        assert img.dtype == np.uint8 and img.ndim == 2 and img.size > 0


def test_dicom_with_a_corrupt_header_element():
    """pydicom parses elements lazily: an unknown VR in Columns used to escape as NotImplementedError (a 500)."""
    good = dicom_bytes()
    tag = b"\x28\x00\x11\x00US"  # (0028,0011) Columns, explicit VR little endian
    assert good.count(tag) == 1
    bad = good.replace(tag, b"\x28\x00\x11\x00U\xfa")
    with pytest.raises(ImageError, match="DICOM"):
        decode_image(bad)
    with pytest.raises(UploadError) as e:
        decode_upload("frontal", bad, 10**7)
    assert e.value.status == 422 and "DICOM" in e.value.message

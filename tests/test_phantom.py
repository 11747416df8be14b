"""Phantom IU X-ray renderer: determinism, layout, truth vs. labels, and that findings show where they should."""
import json

import numpy as np
import pytest

from PIL import Image

from cxrgen.data.phantom import build_phantom, render_text
from cxrgen.data.phantom.render import write_png
from cxrgen.errors import UserError

SIZE = 128  # small renders keep the file fast; geometry is resolution-independent


def _frontal(text: str, sid: str = "CXR1_IM-0001"):
    f, _, truth = render_text(text, sid, size=SIZE, seed=0)
    return f.astype(np.float32), truth


def test_deterministic_per_seed_and_id():
    a = render_text("Small left pleural effusion.", "CXR10_IM-0002", size=SIZE, seed=3)
    b = render_text("Small left pleural effusion.", "CXR10_IM-0002", size=SIZE, seed=3)
    c = render_text("Small left pleural effusion.", "CXR11_IM-0003", size=SIZE, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == a[1].shape == (SIZE, SIZE) and a[0].dtype == np.uint8


def test_normal_report_draws_nothing():
    _, truth = _frontal("The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion.")
    assert truth["findings"] == [] and truth["labels"] == []


def test_effusion_brightens_the_stated_costophrenic_angle():
    normal, _ = _frontal("Lungs are clear.")
    right, truth = _frontal("Large right pleural effusion.")
    assert truth["findings"][0]["drawn"]["sides"] == ["right"]
    diff = right - normal
    h, w = diff.shape
    patient_right = diff[int(0.5 * h):int(0.8 * h), : w // 2].mean()  # patient's right = image left
    patient_left = diff[int(0.5 * h):int(0.8 * h), w // 2:].mean()
    assert patient_right > 1.5 and patient_right > 5 * abs(patient_left)


def test_cardiomegaly_raises_the_cardiothoracic_ratio():
    _, normal = _frontal("Heart size normal.")
    big, truth = _frontal("Severe cardiomegaly.")
    assert normal["anatomy"]["ctr"] < 0.5 < truth["findings"][0]["drawn"]["ctr"]


def test_elevated_hemidiaphragm_raises_the_stated_side():
    normal, _ = _frontal("Lungs are clear.")
    right, _ = _frontal("Elevated right hemidiaphragm.")
    diff = right - normal
    h, w = diff.shape
    lower = slice(int(0.45 * h), int(0.85 * h))
    assert diff[lower, : w // 2].mean() > 3 * max(abs(diff[lower, w // 2:].mean()), 0.5)  # patient's right = image left


def test_rib_fracture_on_the_numbered_ribs():
    _, truth = _frontal("Old healed left 5th and 6th rib fractures are seen laterally.")
    breaks = truth["findings"][0]["drawn"]["breaks"]
    assert [(b["side"], b["rib"]) for b in breaks] == [("left", 5), ("left", 6)]


def test_pneumothorax_darkens_the_apex_and_granuloma_is_bright():
    normal, _ = _frontal("Lungs are clear.")
    ptx, _ = _frontal("Large left pneumothorax.")
    h, w = ptx.shape
    assert (ptx - normal)[int(0.1 * h):int(0.4 * h), w // 2:].mean() < -2
    gran, truth = _frontal("Calcified granuloma in the right upper lobe.")
    spot = truth["findings"][0]["drawn"]["spots"][0]
    y, x = int(spot["y"] * h), int(spot["x"] * w)
    assert (gran - normal)[y - 2:y + 3, x - 2:x + 3].max() > 40


@pytest.mark.parametrize("text,kind", [
    ("Left-sided pacemaker.", "pacemaker"), ("Median sternotomy wires.", "sternotomy"),
    ("Large hiatal hernia.", "hiatal_hernia"), ("Degenerative changes of the thoracic spine.", "degenerative_spine"),
    ("Right lower lobe consolidation.", "consolidation"), ("Mild pulmonary edema.", "edema"),
    ("Healed right rib fracture.", "rib_fracture"), ("Hyperinflated lungs.", "hyperinflation"),
    ("Thoracic scoliosis.", "scoliosis"), ("Bibasilar atelectasis.", "atelectasis"),
    ("There is biapical scarring.", "scarring"), ("Tortuous aorta.", "tortuous_aorta"),
    ("Elevated right hemidiaphragm.", "elevated_hemidiaphragm"),
])
def test_each_finding_changes_both_views(text, kind):
    f0, l0, _ = render_text("Lungs are clear.", "CXR5_IM-0009", size=SIZE)
    f1, l1, truth = render_text(text, "CXR5_IM-0009", size=SIZE)
    assert [d["kind"] for d in truth["findings"]] == [kind]
    assert np.abs(f1.astype(int) - f0).mean() > 0.05
    if kind not in ("scoliosis",):  # scoliosis is a frontal sign
        assert np.abs(l1.astype(int) - l0).mean() > 0.05


def test_edema_beside_a_large_heart_does_not_crash():
    # regression: CXR2673_IM-1149 once crashed when a septal-line row of the lung was all heart
    text = ("The heart is large. In the interval, pulmonary venous engorgement has developed. "
            "Also, bibasilar interstitial infiltrates are present.")
    _, _, truth = render_text(text, "CXR2673_IM-1149", size=SIZE)
    assert [f["kind"] for f in truth["findings"]] == ["cardiomegaly", "edema", "opacity"]


def test_uncertain_is_drawn_faintly_and_negated_not_at_all():
    _, truth = _frontal("Possible right lower lobe consolidation. No pneumothorax.")
    (f,) = truth["findings"]
    assert f["status"] == -1 and f["strength"] == 0.5 and "half strength" in truth["uncertain_rule"]


def test_truth_matches_report_labels(shared_iu):
    from cxrgen.data.iu import load_iu_xray
    from cxrgen.labeler import label

    studies = [s for s in load_iu_xray("test") if s.findings.strip()][:40]
    for s in studies[:40]:
        expected = sorted(c for c, v in label(s.findings).items() if v == 1 and c != "No Finding")
        _, _, truth = render_text(s.findings, s.id, size=32)
        assert truth["labels"] == expected, (s.id, s.findings)


def test_png_writer_is_lossless(tmp_path):
    front, _, _ = render_text("Left-sided pacemaker.", "CXR7_IM-0001", size=SIZE)
    odd = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)  # wrap-around in the up filter
    for a in (front, odd):
        write_png(tmp_path / "a.png", a)
        with Image.open(tmp_path / "a.png") as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), a)


def test_build_writes_r2gen_layout_that_loads(tmp_path):
    from cxrgen.data.specs import load_studies

    counts = build_phantom(tmp_path / "ph", size=64, limit=3, workers=1)
    assert counts["studies"] == 3 and counts["images"] == 6
    ann = json.loads((tmp_path / "ph" / "annotation.json").read_text())
    row = ann["train"][0]
    assert row["image_path"] == [f"{row['id']}/0.png", f"{row['id']}/1.png"] and row["report"]
    truth = json.loads((tmp_path / "ph" / "images" / row["id"] / "truth.json").read_text())
    assert truth["id"] == row["id"]
    studies = load_studies(f"phantom:{tmp_path / 'ph'}")
    assert len(studies) == 3 and all(im.path.is_file() for s in studies for im in s.images)


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"limit": 0}, {"workers": 0}])
def test_bad_arguments_raise_user_error(tmp_path, kwargs):
    with pytest.raises(UserError):
        build_phantom(tmp_path / "x", **kwargs)


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError):
        build_phantom(tmp_path / "f", limit=1)


@pytest.mark.slow
def test_the_renderer_with_worker_processes_ends_without_a_traceback(tmp_path):
    """The pool stops its workers with SIGTERM; the CLI's SIGTERM handler, inherited through fork, must not
    make each of them print a KeyboardInterrupt traceback on the user's console."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cxrgen.cli", "data", "phantom", "--out", str(tmp_path / "ph"),
                           "--size", "64", "--limit", "16", "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr

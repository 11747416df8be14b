"""Findings outside CheXpert's 14: read from the images, planned into the bank's reports, and stated by reranking."""
import numpy as np
import pytest
import torch

from cxrgen.bank import ReportBank
from cxrgen.extras import FILE, MIN_EXAMPLES, ExtraFindings, study_features
from cxrgen.labeler import extra_findings, label_many

SPINE, GRANULOMA = "degenerative changes", "granuloma"


def test_extra_findings_are_the_stated_mentions_outside_the_14():
    assert extra_findings("Degenerative changes of the spine. Calcified granuloma. Mild cardiomegaly.") == {SPINE, GRANULOMA}
    assert extra_findings("No hiatal hernia. Possible emphysema.") == {"emphysema"}  # hedged counts, denied does not
    assert extra_findings("Small left pleural effusion.") == frozenset()


def test_study_features_add_the_laterals_mean_and_max_to_the_frontals_halves():
    tokens = torch.zeros(2, 2, 4, 3)
    tokens[0, 1, :, 0] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # study 0 has a lateral; study 1 none (zeros)
    f = study_features(tokens)
    assert f.shape == (2, 6 * 3)
    assert f[0, -6:].tolist() == [3.0, 0, 0, 6.0, 0, 0]  # lateral mean, then lateral max
    assert not f[1].any()


def _synthetic(n, rng):
    """Features whose first column says whether the report states degenerative changes of the spine."""
    spine = rng.random(n) < 0.5
    x = rng.normal(0, 0.3, (n, 6)).astype(np.float32)
    x[:, 0] += np.where(spine, 2.0, -2.0)
    reports = ["The heart is normal." + (" Degenerative changes of the spine." if s else "") for s in spine]
    return torch.from_numpy(x), reports, spine


def test_a_model_per_finding_with_enough_reports_learns_it_and_survives_a_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, reports, _ = _synthetic(200, rng)
    reports = [r + (" Calcified granuloma." if i < MIN_EXAMPLES - 1 else "") for i, r in enumerate(reports)]
    model = ExtraFindings.fit(x, reports)
    assert model.findings == {SPINE}  # one granuloma report too few
    x_new, _, truth = _synthetic(100, rng)
    called = [SPINE in ExtraFindings.calls(p) for p in model.probabilities(x_new)]
    assert np.mean(np.array(called) == truth) > 0.9
    model.save(tmp_path)
    again = ExtraFindings.load(tmp_path)
    assert again.probabilities(x_new) == model.probabilities(x_new)
    assert ExtraFindings.load(tmp_path / "none") is None and (tmp_path / FILE).is_file()


def test_the_plan_removes_extras_not_read_and_adds_those_read():
    reports = ["Mild cardiomegaly. Degenerative changes of the spine."] * 3 + ["Mild cardiomegaly."] * 2 + [
               "Calcified granuloma.", "Calcified granuloma.", "Old granulomatous disease."]
    bank = ReportBank.build(reports, label_many(reports), no_finding=True, with_sentences=True)
    heart = frozenset({"Cardiomegaly"})
    read = frozenset({SPINE, GRANULOMA})
    assert bank.sentences[GRANULOMA] == "Calcified granuloma." and bank.sentences[SPINE] == "Degenerative changes of the spine."
    assert set(bank.plan(heart)) == {"Mild cardiomegaly. Degenerative changes of the spine.", "Mild cardiomegaly."}
    assert bank.plan(heart, extras=frozenset(), read=read) == ["Mild cardiomegaly."]
    assert bank.plan(heart, extras=frozenset({GRANULOMA}), read=read) == ["Mild cardiomegaly. Calcified granuloma."]
    assert bank.plan(heart, extras=frozenset({SPINE}), read=read) == ["Mild cardiomegaly. Degenerative changes of the spine."]
    # a finding the image is not read for stays as the report states it
    assert set(bank.plan(heart, extras=frozenset(), read=frozenset({GRANULOMA}))) == set(bank.plan(heart))


class _Reading:
    """Models that read degenerative changes of the spine with probability `p` on every image (a stand-in
    for a fitted `ExtraFindings`)."""
    findings = frozenset({SPINE})

    def __init__(self, p):
        self.p = p

    def probabilities(self, features):
        return [{SPINE: self.p} for _ in features]


def test_reranking_states_the_findings_outside_the_14_that_the_image_shows(generator_calling):
    gen = generator_calling("Cardiomegaly")
    spine = "Mild cardiomegaly. Degenerative changes of the spine."
    reports = [spine, spine, "Mild cardiomegaly."]
    gen.bank = ReportBank.build(reports, label_many(reports), no_finding=True, with_sentences=True)
    image = np.full((64, 64), 128, np.uint8)
    out = gen.generate(image, rerank=True)
    assert out["extras"] == {} and out["report"] == spine  # without the models the two tie: the typical one
    for p, expected in ((0.1, "Mild cardiomegaly."), (0.9, spine)):
        gen.extras = _Reading(p)
        gen.bank = gen.bank  # new readers: plan afresh
        out = gen.generate(image, rerank=True)
        assert out["report"] == expected
        assert out["extras"] == {SPINE: p}


def test_generate_reads_the_models_folder_and_no_extras_turns_them_off(tiny_model, tmp_path, capsys):
    import json
    import shutil

    from cxrgen.cli import main
    from cxrgen.inference import ReportGenerator, views_to_tensor
    from cxrgen.testing import png

    model = shutil.copytree(tiny_model, tmp_path / "model")
    gen = ReportGenerator.from_pretrained(model)
    assert gen.extras is None
    image = np.full((64, 64), 128, np.uint8)
    with torch.no_grad():
        tokens = gen.model.encode_views(*views_to_tensor([image], [None], gen.config.model.image_size))
    width = study_features(tokens).shape[1]
    ExtraFindings({SPINE: (np.zeros(width, np.float32), np.array([3.0], np.float32))}).save(model)
    path = tmp_path / "f.png"
    path.write_bytes(png(value=128))
    for flag, expected in (([], {SPINE: pytest.approx(0.9526, abs=1e-4)}), (["--no-extras"], {})):
        assert main(["generate", "--model", str(model), "--image", str(path), "--json", *flag]) == 0
        assert json.loads(capsys.readouterr().out)["extras"] == expected


def test_where_the_classifier_calls_nothing_the_likeliest_finding_outside_the_14_is_called():
    probabilities = {SPINE: 0.3, GRANULOMA: 0.2}
    assert ExtraFindings.calls(probabilities) == frozenset()
    assert ExtraFindings.calls(probabilities, abnormal=True) == {SPINE}
    assert ExtraFindings.calls({SPINE: 0.3, GRANULOMA: 0.7}, abnormal=True) == {GRANULOMA}  # a call at 0.5 stands alone
    assert ExtraFindings.calls({}, abnormal=True) == frozenset()

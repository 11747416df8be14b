"""Side models: where a called finding is, read from the frontal image, and reranking that says it."""
import numpy as np
import torch

from cxrgen.labeler import CONDITIONS
from cxrgen.sides import FILE, MIN_EXAMPLES, SideModel, side_features, stated_sides


def test_stated_sides_reads_present_and_uncertain_mentions_only():
    assert stated_sides("Small left pleural effusion. Right basilar atelectasis.") == \
        {"Pleural Effusion": "left", "Atelectasis": "right"}
    assert stated_sides("Bilateral pleural effusions.") == {"Pleural Effusion": "bilateral"}
    assert stated_sides("Left pleural effusion. Small right pleural effusion.") == {"Pleural Effusion": "bilateral"}
    assert stated_sides("No right pleural effusion. Possible left lower lobe atelectasis.") == {"Atelectasis": "left"}
    assert stated_sides("Pleural effusion.") == {}


def test_side_features_pool_the_image_halves_left_first():
    grid = torch.zeros(1, 4, 4, 2)
    grid[:, :, :2, 0] = 1.0  # channel 0 lit on the image's left half, channel 1 on its right half
    grid[:, :, 2:, 1] = 3.0
    f = side_features(grid.reshape(1, 16, 2))
    assert f.shape == (1, 8)
    assert f[0].tolist() == [1, 0, 1, 0, 0, 3, 0, 3]  # left mean, left max, right mean, right max


def _synthetic(n, rng):
    """Features whose first column says the side of an effusion that the report states."""
    sides = rng.choice(["left", "right", "bilateral"], n)
    x = rng.normal(0, 0.3, (n, 6)).astype(np.float32)
    x[:, 0] += np.select([sides == "left", sides == "right"], [-2.0, 2.0], 0.0)
    reports = [f"{'Bilateral' if s == 'bilateral' else s.capitalize()} pleural effusion. The heart is normal." for s in sides]
    return torch.from_numpy(x), reports, sides


def test_a_side_model_learns_sides_and_survives_a_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, reports, _ = _synthetic(120, rng)
    few = ["Right basilar atelectasis."] * (MIN_EXAMPLES - 1) + ["The heart is normal."] * (120 - MIN_EXAMPLES + 1)
    model = SideModel.fit(x, [r + " " + f for r, f in zip(reports, few)])
    assert set(model.weights) == {"Pleural Effusion"}  # too few sided atelectasis reports, and one side only
    x_new, _, truth = _synthetic(60, rng)
    predicted = [p["Pleural Effusion"] for p in model.predict(x_new)]
    assert np.mean(np.array(predicted) == truth) > 0.9
    model.save(tmp_path)
    again = SideModel.load(tmp_path)
    assert again.predict(x_new) == model.predict(x_new)
    assert SideModel.load(tmp_path / "none") is None and (tmp_path / FILE).is_file()


class _Left:
    """Side models that put every finding on the left (a stand-in for a fitted `SideModel`)."""

    def predict(self, features):
        return [{c: "left" for c in CONDITIONS} for _ in features]


def test_reranking_puts_a_called_finding_on_the_side_the_side_model_reads(generator_calling):
    """Both bank reports state the effusion; the side decides over the more typical wording."""
    from cxrgen.bank import ReportBank
    from cxrgen.labeler import label_many

    gen = generator_calling("Pleural Effusion")
    assert gen.sides is None
    unsided, left = "Small pleural effusion.", "Small left pleural effusion."
    reports = [unsided, unsided, left]
    gen.bank = ReportBank.build(reports, label_many(reports), no_finding=True)
    assert gen.bank.sets[frozenset({"Pleural Effusion"})][0] == unsided  # the more typical wording
    image = np.full((64, 64), 128, np.uint8)
    out = gen.generate(image, rerank=True)
    assert out["sides"] == {} and out["report"] == unsided  # without side models the two tie: the typical one
    gen.sides = _Left()
    out = gen.generate(image, rerank=True)
    assert out["report"] == left
    assert out["sides"] == {"Pleural Effusion": "left"}  # called findings only

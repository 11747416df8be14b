"""The command line as a newcomer meets it: early one-line errors, self-describing help and output."""
import pytest

from cxrgen.cli import main
from cxrgen.testing import png, run_cli_fresh


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "frontal.png"
    path.write_bytes(png(64, 64))
    return path


# (argv with {placeholders}, text the one error line must contain)
EARLY = {
    "missing image": (["generate", "--model", "{model}", "--image", "{tmp}/nope.png"], "{tmp}/nope.png"),
    "missing lateral": (["generate", "--model", "{model}", "--image", "{image}", "--lateral", "{tmp}/nope.png"],
                        "{tmp}/nope.png"),
    "missing model": (["generate", "--model", "{tmp}/nope", "--image", "{image}"], "model directory not found"),
    "not a model": (["generate", "--model", "{tmp}", "--image", "{image}"], "is not a cxrgen checkpoint"),
    "missing --model": (["generate", "--image", "{image}"], "required: --model"),
    "missing --image or --data": (["generate", "--model", "{model}"], "one of the arguments --image --data"),
    "missing dataset": (["generate", "--model", "{model}", "--data", "manifest:{tmp}/nope.csv", "--output", "{tmp}/p"],
                        "{tmp}/nope.csv"),
    "serve: missing model": (["serve", "--model", "{tmp}/nope"], "model directory not found"),
    "serve: missing --model": (["serve"], "one of the arguments --model --new-token is required"),
    "model card: missing model": (["model", "card", "--model", "{tmp}/nope"], "{tmp}/nope"),
    "label: missing input": (["label", "--input", "{tmp}/nope.csv", "--output", "{tmp}/o.csv"], "{tmp}/nope.csv"),
    "simplify: missing input": (["simplify", "--input", "{tmp}/nope.csv"], "{tmp}/nope.csv"),
    "eval: missing predictions": (["eval", "--predictions", "{tmp}/nope.csv", "--dataset", "iu-xray",
                                   "--output", "{tmp}/e"], "{tmp}/nope.csv"),
    "train: missing --data": (["train", "--output", "{tmp}/r"], "required: --data"),
    "data check: missing folder": (["data", "check", "openi", "{tmp}/nope"], "{tmp}/nope"),
}


@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.parametrize("case", sorted(EARLY))
def test_mistakes_fail_in_one_line_before_torch_is_imported(case, tiny_model, image, tmp_path):
    argv, expected = EARLY[case]
    fill = {"model": tiny_model, "image": image, "tmp": tmp_path}
    code, err, seconds, heavy = run_cli_fresh([a.format(**fill) for a in argv])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert expected.format(**fill) in err, err
    assert heavy == [], f"{case}: imported {heavy} before failing"
    assert seconds < 5  # sanity only: under 1 s on a quiet machine (docs/benchmarks.md)


def test_required_options_are_required_in_the_usage_line(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "--model MODEL (--image IMAGE | --data DATA)" in " ".join(usage.split())
    assert "[--model" not in usage

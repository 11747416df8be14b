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
    "eval: missing dataset": (["eval", "--predictions", "{image}", "--dataset", "phantom:{tmp}/nope",
                               "--output", "{tmp}/e"], "{tmp}/nope"),
    "train: missing dataset": (["train", "--data", "manifest:{tmp}/nope.csv", "--output", "{tmp}/r"], "{tmp}/nope.csv"),
    "train: missing config": (["train", "--config", "{tmp}/nope.yaml", "--data", "manifest:{tmp}/nope.csv",
                               "--output", "{tmp}/r"], "{tmp}/nope.yaml"),
    "model calibrate: missing dataset": (["model", "calibrate", "--model", "{model}", "--data", "phantom:{tmp}/nope"],
                                         "{tmp}/nope"),
    "clip train: missing dataset": (["clip", "train", "--data", "phantom:{tmp}/nope", "--output", "{tmp}/c"],
                                    "{tmp}/nope"),
    "clip eval: missing clip": (["clip", "eval", "--clip", "{tmp}/nope", "--data", "iu-xray"], "{tmp}/nope"),
    "experiment: missing file": (["experiment", "{tmp}/nope.yaml"], "{tmp}/nope.yaml"),
    "baseline: missing dataset": (["baseline", "most-frequent", "--dataset", "phantom:{tmp}/nope", "--output",
                                   "{tmp}/b.jsonl"], "{tmp}/nope"),
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


@pytest.mark.slow  # a fresh interpreter that loads a model
def test_generate_with_a_lite0_model_imports_neither_timm_nor_transformers(image, tmp_path):
    from cxrgen.testing import make_tiny_checkpoint

    model = make_tiny_checkpoint(tmp_path / "lite0", encoder="efficientnet_lite0", image_size=64)
    code, err, _, heavy = run_cli_fresh(["generate", "--model", str(model), "--image", str(image)])
    assert (code, heavy) == (0, ["torch"]), err


def test_required_options_are_required_in_the_usage_line(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "--model MODEL (--image IMAGE | --data DATA)" in " ".join(usage.split())
    assert "[--model" not in usage


def test_generate_help_lists_the_json_fields(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for field in ("report", "probabilities", "calls", "sides", "extras", "unstated", "uncalled", "ood", "attention", "disclaimer"):
        assert f"\n  {field} " in text, field
    assert "only with --attention" in text


def test_generate_json_has_attention_only_on_request(tiny_model, image, capsys):
    import json

    assert main(["generate", "--model", str(tiny_model), "--image", str(image), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"report", "probabilities", "calls", "sides", "extras", "unstated", "uncalled", "ood", "disclaimer"}
    assert main(["generate", "--model", str(tiny_model), "--image", str(image), "--json", "--attention"]) == 0
    grid = json.loads(capsys.readouterr().out)["attention"]
    assert len(grid) == len(grid[0]) and max(map(max, grid)) == pytest.approx(1.0, abs=1e-3)
    assert main(["generate", "--model", str(tiny_model), "--image", str(image), "--attention"]) == 2
    assert "add --json" in capsys.readouterr().err


def test_label_help_gives_the_legend(capsys):
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = capsys.readouterr().out
    assert "1      positive" in text and "0      negative" in text and "-1     uncertain" in text
    assert "blank  not mentioned" in text


def test_label_summary_counts_uncertain_findings_and_warns_about_empty_reports(tmp_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text('id,report\na,Possible pneumonia. Small left pleural effusion.\nb,"  "\nc,Cardiomegaly.\n')
    assert main(["label", "--input", str(src), "--output", str(tmp_path / "o.csv")]) == 0
    out, err = capsys.readouterr()
    assert "positive (1): Cardiomegaly 1, Pleural Effusion 1" in out
    assert "uncertain (-1): Pneumonia 1" in out
    assert err.startswith("warning: 1 empty report(s) (line 3 of") and "all their labels are blank" in err


def _same_file(tmp_path, suffix):
    """The three test studies of the tiny manifest, as predictions with extra columns, in CSV or JSONL."""
    import csv
    import json

    from cxrgen.testing import MANIFEST_REPORTS

    rows = [{"study": f"s{i}", "site": "A", "findings": MANIFEST_REPORTS[i % 2]} for i in (13, 14, 15)]
    path = tmp_path / f"drafts{suffix}"
    if suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])  # told apart by content, not by name
def test_label_and_simplify_read_the_same_file(tmp_path, capsys, suffix):
    import json

    from cxrgen.io import read_prediction_rows

    path = _same_file(tmp_path, suffix)
    columns = ["--text-column", "findings"]
    assert main(["label", "--input", str(path), *columns, "--output", str(tmp_path / "labels.jsonl")]) == 0
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [r["study"] for r in labels] == ["s13", "s14", "s15"] and labels[1]["Cardiomegaly"] == 1
    capsys.readouterr()
    assert main(["simplify", "--input", str(path), "--id-column", "study", *columns]) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in plain] == ["s13", "s14", "s15"] and all(r["plain"] for r in plain)
    rows = read_prediction_rows(path, "study", "findings")
    assert list(rows) == ["s13", "s14", "s15"] and rows["s14"]["report"].startswith("The heart is enlarged")
    assert main(["simplify", "--input", str(path)]) == 2  # the default columns are id and report
    assert "no column 'report'; the columns are study, site, findings" in capsys.readouterr().err


@pytest.mark.slow  # starts the METEOR JVM
def test_eval_reads_the_same_csv(tmp_path, manifest, capsys):
    import json

    path = _same_file(tmp_path, ".csv")
    assert main(["eval", "--predictions", str(path), "--id-column", "study", "--text-column", "findings",
                 "--dataset", f"manifest:{manifest}", "--split", "test", "--output", str(tmp_path / "e"),
                 "--bootstrap", "10"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["drafts"]["BLEU-4"]["value"] == pytest.approx(1.0)  # the references themselves

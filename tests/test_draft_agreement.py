"""Do drafts state what the model's own classifier calls? Macro-F1 over the conditions called at least once."""
import json

import numpy as np
import pytest

from cxrgen.cli import main
from cxrgen.evaluate.clinical import ce_counts, draft_agreement, label_texts
from cxrgen.io import read_prediction_rows
from cxrgen.labeler import CONDITIONS
from cxrgen.errors import UserError


def _calls(*rows: list[str]) -> np.ndarray:
    return np.array([[c in row for c in CONDITIONS] for row in rows], dtype=bool)


def test_draft_agreement_is_macro_f1_over_the_called_conditions():
    drafts = ["Small left pleural effusion.", "The lungs are clear.", "Cardiomegaly. Small pleural effusion."]
    calls = _calls(["Pleural Effusion"], ["Pleural Effusion"], ["Cardiomegaly"])
    counts = ce_counts(label_texts(drafts), calls).sum(0)
    called = calls.any(0)
    # effusion: 1 stated and called, 1 called not stated, 1 stated not called -> F1 0.5; cardiomegaly: 1.0
    # No Finding is stated by draft 2 but never called, so it does not count
    assert draft_agreement(counts, called) == pytest.approx((0.5 + 1.0) / 2)
    assert draft_agreement(counts, np.zeros(len(CONDITIONS), bool)) == 0


def test_prediction_rows_keep_calls_and_refuse_bad_ones(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "report": "x", "calls": ["Edema"]}) + "\n")
    assert read_prediction_rows(path)["a"]["calls"] == ["Edema"]
    path.write_text(json.dumps({"id": "a", "report": "x", "calls": "Edema"}) + "\n")
    with pytest.raises(UserError, match='"calls" must be a list'):
        read_prediction_rows(path)
    path.write_text(json.dumps({"id": "a", "report": "", "refused": "ood"}) + "\n")
    assert read_prediction_rows(path)["a"]["refused"] == "ood"
    path.write_text(json.dumps({"id": "a", "report": "x", "refused": "ood"}) + "\n")  # a refusal has no draft
    with pytest.raises(UserError, match='"refused" must give the reason as a string and an empty report'):
        read_prediction_rows(path)


@pytest.mark.slow  # starts the METEOR JVM
def test_eval_reports_draft_agreement_for_files_with_calls(tmp_path, capsys):
    refs = {"s1": "Small left pleural effusion.", "s2": "The lungs are clear.", "s3": "Cardiomegaly."}
    ann = {"train": [{"id": "t1", "report": "The lungs are clear.", "image_path": []}],
           "test": [{"id": k, "report": v, "image_path": []} for k, v in refs.items()]}
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "annotation.json").write_text(json.dumps(ann))
    model, plain = tmp_path / "model.jsonl", tmp_path / "plain.jsonl"
    model.write_text("".join(json.dumps({"id": k, "report": v, "calls": ["Pleural Effusion"] if k == "s1" else []}) + "\n"
                             for k, v in refs.items()))
    plain.write_text("".join(json.dumps({"id": k, "report": v}) + "\n" for k, v in refs.items()))
    out = tmp_path / "ev"
    assert main(["eval", "--predictions", str(model), "--predictions", str(plain), "--dataset",
                 f"r2gen:{tmp_path / 'ds'}", "--output", str(out), "--bootstrap", "20"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["draft-agreement"]["value"] == 1.0  # the one call is stated, nothing else called
    assert "draft-agreement" not in metrics["plain"]
    assert "## Drafts against the classifier's own calls" in capsys.readouterr().out


def test_agreement_is_f1_between_the_stated_and_the_called_findings():
    from cxrgen.bank import finding_set
    from cxrgen.inference import agreement
    from cxrgen.labeler import label_many

    def agree(texts, called):
        return [agreement(finding_set(lab, no_finding=True), called) for lab in label_many(texts)]

    texts = ["The lungs are clear.", "Small left pleural effusion.", "Cardiomegaly. Small left pleural effusion.",
             "Possible small left pleural effusion."]
    assert agree(texts, frozenset({"Pleural Effusion"})) == pytest.approx([0.0, 1.0, 2 / 3, 1.0])
    assert agree(texts[:2], frozenset({"No Finding"})) == [1.0, 0.0]  # No Finding is one of the calls
    assert agree(["Degenerative changes of the spine."], frozenset()) == [1.0]  # nothing of the 14, nothing called


def test_beam_search_lists_every_beam_best_first():
    import torch

    from cxrgen.decoding import beam_search
    from cxrgen.models.decoder import DecoderConfig, Memory, TransformerDecoder

    torch.manual_seed(0)
    dec = TransformerDecoder(DecoderConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=10, dropout=0.0)).eval()
    memory = Memory(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 14), 4, 1)
    out = beam_search(dec, memory, bos_id=0, eos_id=1, beam_size=4, max_len=10)
    assert [len(c) for c in out.candidates] == [4, 4]
    assert [c[0] for c in out.candidates] == out.sequences

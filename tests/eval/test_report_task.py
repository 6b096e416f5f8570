"""MIMIC-CXR report task end to end (Java: one small case) and a tiny real VLM run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medm3.eval.runner import PREDICTIONS, RUN_LOG, run_eval
from medm3.eval.scorers.report import clean_report
from medm3.vlm.base import ImagePart, Message
from medm3.vlm.mock import MockBackend
from tests.eval import fixtures

GENERATED = {
    0: "FINDINGS: The heart size is normal.\nThe lungs are clear. The lungs are clear.",
    60: "??",  # cleans to nothing: dropped with its reference
    120: "impression: lungs are clear. No acute process! Is there edema?",
}


def _by_shade(messages: list[Message]) -> str:
    image = next(p.image for p in messages[0].content if isinstance(p, ImagePart))
    return GENERATED[image.getpixel((0, 0))[0]]


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
def test_mimic_report_matches_pycocoevalcap(tmp_path: Path) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    fixtures.mimic_reports(tmp_path / "data")
    vlm = MockBackend(script=_by_shade)
    run = run_eval("mimic-cxr-report", vlm, tmp_path / "data", tmp_path / "run", batch_size=2)
    config = vlm.requests[0].config
    assert (config.temperature, config.max_new_tokens) == (0.2, 512)
    assert vlm.calls[0][0].content[1].text == "Describe the image in detail."
    m = run.metrics
    assert (m["n"], m["n_dropped"]) == (2, 1)
    assert m["green"] is None and "green" in m["unavailable"]

    # the same cleaned pairs scored by calling pycocoevalcap directly
    refs = [fixtures.REPORTS[0][1], fixtures.REPORTS[2][1]]
    hyps = [clean_report(GENERATED[0]), clean_report(GENERATED[120])]
    assert hyps == [
        "The heart size is normal. The lungs are clear.",  # repeated sentence dropped
        "Lungs are clear. No acute process!",
    ]
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    bleu, _ = Bleu(4).compute_score(gts, res)
    expected = {f"bleu_{k + 1}": v for k, v in enumerate(bleu)}
    expected["meteor"] = Meteor().compute_score(gts, res)[0]
    expected["rouge_l"] = Rouge().compute_score(gts, res)[0]
    expected["cider"] = Cider().compute_score(gts, res)[0]
    for key, value in expected.items():
        assert m[key] == pytest.approx(100 * value, abs=1e-9), key
    log = json.loads((tmp_path / "run" / RUN_LOG).read_text())
    assert log["samples"][1]["scored"] is False
    assert log["samples"][2]["cleaned"] == hyps[1]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from medm3.testing.tiny_hf import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def test_tiny_llava_batched_equals_sequential(tiny_llava: Path, tmp_path: Path) -> None:
    from medm3.vlm.hf import HFBackend

    data = fixtures.llava_vqa(tmp_path / "data")
    vlm = HFBackend(str(tiny_llava), device="cpu", batch_size=4)
    batched = run_eval("vqa-rad", vlm, data, tmp_path / "b", batch_size=3, max_new_tokens=6)
    single = run_eval("vqa-rad", vlm, data, tmp_path / "s", batch_size=1, max_new_tokens=6)
    texts = [
        [json.loads(x)["text"] for x in (tmp_path / d / PREDICTIONS).read_text().splitlines()]
        for d in ("b", "s")
    ]
    assert len(texts[0]) == 3 and texts[0] == texts[1]
    assert batched.metrics == single.metrics
    log = json.loads((tmp_path / "b" / RUN_LOG).read_text())
    assert log["protocol_overrides"] == {"max_new_tokens": {"protocol": 1024, "used": 6}}
    assert log["model"] == {"backend": "hf", "model_id": str(tiny_llava)}
    assert log["versions"]["torch"] and log["versions"]["transformers"]

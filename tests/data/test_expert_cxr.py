"""expert-cxr: CheXpert / ChestX-ray14 labels and wrapped report rows with CXR expert turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medm3 import prompts
from medm3.data.engine import build_dataset
from medm3.data.llava import read_dataset, row_images
from medm3.errors import InputError
from tests.data.fixtures import probabilities_for, write_chexpert, write_mimic, write_nih
from tests.data.replay import replay, row_turns

CHEX_KEYS = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg",
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg",
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
]


def _feedback(probs: dict[str, float], question: str) -> str:
    """The training text: the reference ensemble file's order (Pneumothorax last), ``> 0.5``."""
    from medm3.experts.cxr import LABELS

    order = [k for k in LABELS if k != "Pneumothorax" and k in probs] + ["Pneumothorax"]
    lines = "".join(
        f"{k.lower().replace('_', ' ')}: {'yes' if probs.get(k, 0.0) > 0.5 else 'no'}\n"
        for k in order
        if k in probs
    )
    return (
        f"The resulting predictions are:\n{lines}. Analyze the image and take these predictions "
        f"into account when responding to this prompt:\n{question}"
    )


def _check_expert_turns(row: dict[str, Any], probs: dict[str, float]) -> None:
    from medm3.agent.protocol import get_protocol

    released = get_protocol("released")
    question, turns = row["question"], row_turns(row)
    cards = released.cards([])
    assert turns[0] == ("human", f"{cards.strip()} <image>\nThis is a CXR image.\n{question}")
    assert turns[1] == ("gpt", "This looks like an chest x-ray. Let me first trigger <CXR()>.")
    assert turns[2] == ("human", _feedback(probs, question))


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("chex")
    source = write_chexpert(root)
    probs = probabilities_for(CHEX_KEYS)
    (root / "probs.json").write_text(json.dumps(probs))
    build_dataset(
        "expert-cxr",
        source,
        root / "out",
        options={"probabilities": str(root / "probs.json"), "questions_per_image": 3},
    )
    return source, root / "out", probs


def test_chexpert_rows(chexpert: tuple[Path, Path, dict]) -> None:
    _, out, probs = chexpert
    data = read_dataset(out)
    assert {k: len(v) for k, v in data.items()} == {"train": 6, "val": 3}
    definite = {  # patient -> finding -> present (uncertain -1 and blanks are never asked)
        "patient00001": {"pneumothorax": False, "support devices": True},
        "patient00002": {"lung opacity": True, "fracture": True},
        "patient64541": {
            "enlarged cardiomediastinum": True,
            "cardiomegaly": True,
            "lung opacity": True,
        },
    }
    for rows in data.values():
        for row in rows:
            key = row["id"].split("/", 2)[2].split("#")[0]
            _check_expert_turns(row, probs[key])
            assert "lateral" not in key
            patient = key.split("/")[2]
            answer = row["conversations"][-1]["value"]
            if row["question_type"] == "is-there":
                finding = row["finding"]
                if patient != "patient64541":  # all of its labels are definite (0 or 1)
                    assert finding in definite[patient]
                expected = definite[patient].get(finding, False)
                assert answer == ("yes" if expected else "no")
            else:
                assert answer.startswith(("The findings are: ", "There are no abnormal findings."))
            assert (out / row_images(row)[0]).is_file()


def test_agent_replays_cxr_rows(
    chexpert: tuple[Path, Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.data.reference_experts import FixedCXR
    from medm3.imaging.io import load_image

    _, out, probs = chexpert
    for row in read_dataset(out)["train"]:
        key = row["id"].split("/", 2)[2].split("#")[0]
        image = load_image(out / row_images(row)[0], modality="XR")
        image.metadata["body_part"] = "CHEST"  # known to be a chest X-ray, as in DICOM
        turns, n_images = replay(row, image, {"cxr": FixedCXR(probs[key])}, monkeypatch)
        assert turns == row_turns(row) and n_images == 1


def test_nih_splits_and_batched_expert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medm3.experts.cxr import CXRExpert

    source = write_nih(tmp_path / "nih")
    probs = probabilities_for(["a"], seed=5)["a"]
    batches: list[int] = []

    def predict(self: CXRExpert, images: list[Any], mode: str, size: int) -> list[dict]:
        assert all(image.modality == "XR" for image in images)
        batches.append(len(images))
        return [dict(probs) for _ in images]

    # The inference step of the real expert (PrecomputedCXR, which writes the rows'
    # texts from these probabilities, has its own and is not counted).
    monkeypatch.setattr(CXRExpert, "_predict", predict)
    build_dataset("expert-cxr", source, tmp_path / "out", shard_size=2, options={"device": "cpu"})
    assert batches == [2, 1]  # one expert batch per shard
    data = read_dataset(tmp_path / "out")
    assert [r["id"].split("#")[0] for r in data["test"]] == ["expert-cxr/test/00000002_000.png"] * 2
    for rows in data.values():
        for row in rows:
            _check_expert_turns(row, probs)
    answers = {
        (r["id"].split("#")[0], r.get("finding")): r["conversations"][-1]["value"]
        for rows in data.values()
        for r in rows
    }
    for (row_id, finding), answer in answers.items():
        if row_id.endswith("00000002_000.png") and finding:
            assert answer == "no"  # "No Finding"
        if row_id.endswith("00000001_000.png") and finding == "cardiomegaly":
            assert answer == "yes"


def test_wrap_built_reports(tmp_path: Path) -> None:
    mimic = write_mimic(tmp_path / "mimic")
    build_dataset("mimic-cxr", mimic, tmp_path / "mimic_report")
    reports = read_dataset(tmp_path / "mimic_report")
    keys = [r["image"] for rows in reports.values() for r in rows]
    probs = probabilities_for(keys, seed=2)
    (tmp_path / "p.json").write_text(json.dumps(probs))
    build_dataset(
        "expert-cxr",
        tmp_path / "mimic_report",
        tmp_path / "out",
        options={"probabilities": str(tmp_path / "p.json")},
    )
    wrapped = read_dataset(tmp_path / "out")
    assert {k: len(v) for k, v in wrapped.items()} == {k: len(v) for k, v in reports.items()}
    for split, rows in wrapped.items():
        for row, original in zip(rows, reports[split], strict=True):
            _check_expert_turns(row, probs[original["image"]])
            assert row["question"] == prompts.REPORT_PROMPT
            assert row["conversations"][3] == original["conversations"][1]
            assert row["image"] == original["image"]
            assert row["question_type"] == "report"


def test_wrong_layout_and_bad_probabilities(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="not a CheXpert, ChestX-ray14 or built folder"):
        build_dataset("expert-cxr", tmp_path / "x", tmp_path / "out")
    source = write_nih(tmp_path / "nih")
    (tmp_path / "p.json").write_text(json.dumps({"00000001_000.png": {"Cardiomegally": 0.9}}))
    with pytest.raises(InputError, match="labels the CXR expert does not have: Cardiomegally"):
        build_dataset(
            "expert-cxr",
            source,
            tmp_path / "out",
            options={"probabilities": str(tmp_path / "p.json")},
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_cxr_expert_on_random_weights(tmp_path: Path) -> None:
    from medm3.experts.cxr import CXRExpert
    from medm3.imaging.io import load_image
    from medm3.testing.experts import write_random_xrv_weights

    weights = write_random_xrv_weights(tmp_path / "xrv")
    source = write_nih(tmp_path / "nih")
    build_dataset(
        "expert-cxr", source, tmp_path / "out", options={"weights": str(weights), "device": "cpu"}
    )
    row = read_dataset(tmp_path / "out")["train"][0]
    image = load_image(tmp_path / "out" / row["image"], modality="XR")
    result = CXRExpert(device="cpu", weights=weights).run(image, "", use_cache=False)
    question = row["question"]
    probs = CXRExpert(device="cpu", weights=weights, ensemble="reference").predict_batch([image])[0]
    assert result.info["ensemble"] == "calibrated"  # the expert's own default differs
    assert row_turns(row)[2] == ("human", _feedback(probs, question))

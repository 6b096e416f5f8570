"""expert-brats: BraTS rows equal the prompts functions' output and the agent's conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3 import prompts
from medm3.data.engine import build_dataset
from medm3.data.llava import read_dataset, row_images
from tests.data.fixtures import brats_case, save_nifti, write_brats
from tests.data.replay import replay, row_turns

CASES = {"Brats18_TEST_1_1": (0, "HGG"), "Brats18_TEST_2_1": (1, "LGG")}


def _named(folder: Path, case: str) -> dict[str, Any]:
    from medm3.imaging.io import load_image

    return {
        key: load_image(folder / f"{case}_{key}.nii.gz", modality="MR")
        for key, _ in prompts.BRATS_SEQUENCES
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("brats")
    source = write_brats(root / "MICCAI_BraTS_2018_Data_Training")
    options = {"questions_per_case": 5, "protocol": "medm3"}
    build_dataset("expert-brats", source, root / "out", options=options)
    return source, root / "out"


@pytest.fixture(scope="module")
def built_released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("brats-released")
    source = write_brats(root / "MICCAI_BraTS_2018_Data_Training")
    build_dataset("expert-brats", source, root / "out", options={"questions_per_case": 5})
    return source, root / "out"


def test_rows_are_the_prompts_functions_output(built: tuple[Path, Path]) -> None:
    from medm3.agent.protocol import get_protocol
    from medm3.experts.registry import model_cards

    _, out = built
    rows = read_dataset(out)["train"]
    assert len(rows) == 10
    assert {r["question_type"] for r in rows} == {
        "segment",
        "is-there",
        "grade",
        "how-large",
    }
    colours = {1: "red", 2: "blue", 4: "yellow"}  # labels 1, 2, 4 on the shown slice
    for row in rows:
        question, turns = row["question"], row_turns(row)
        _, grade = CASES[row["case"]]
        assert turns[0] == ("human", prompts.brats_first_turn(question, model_cards=model_cards()))
        assert turns[0][1].count("<image>") == 4
        assert turns[1] == ("gpt", prompts.trigger_reply("BRATS"))
        feedback = get_protocol("medm3").brats_feedback(colours, question)
        assert turns[2] == ("human", feedback)
        assert "yellow and red: tumor core, only yellow: enhancing tumor, all colors" in feedback
        kind = row["question_type"]
        images = row_images(row)
        index = images[4].rsplit("_", 1)[1]  # the overlay's slice: brats_axial_N.png
        assert images[:4] == [
            f"images/{row['case']}/{k}_axial_{index}" for k in ("t1ce", "t1", "t2", "flair")
        ]
        assert all((out / p).is_file() for p in images)
        if kind == "grade":
            assert (
                turns[-1][1]
                == f"This is a {'high' if grade == 'HGG' else 'low'}-grade glioma ({grade})."
            )
        elif kind == "is-there":
            assert turns[-1][1] == "yes"  # every fixture case has all three regions
        elif kind == "how-large":
            assert turns[3][1].startswith("Let me use an expert: <MEASURE(")
            assert turns[4][1].startswith("<image>\nThe measurements are:\n")
            assert turns[-1][1].endswith(" mL.")


@pytest.mark.parametrize("which", ["built", "built_released"])
def test_agent_replays_every_row(
    which: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.data.reference_experts import ReferenceBrats

    source, out = request.getfixturevalue(which)
    for row in read_dataset(out)["train"]:
        case = row["case"]
        seed, grade = CASES[case]
        _, seg = brats_case(seed)
        named = _named(source / grade / case, case)
        turns, n_images = replay(row, named, {"brats": ReferenceBrats(seg)}, monkeypatch)
        assert turns == row_turns(row)
        assert n_images == len(row_images(row))


def test_brats2020_grades_and_2023_labels(tmp_path: Path) -> None:
    source = tmp_path / "BraTS2020"
    for i, case in enumerate(("BraTS20_Training_001", "BraTS20_Training_002")):
        sequences, seg = brats_case(i)
        if i == 1:
            seg = np.where(seg == 4, 3, seg).astype(np.uint8)  # BraTS 2023 label for ET
        for key, array in sequences.items():
            save_nifti(array, source / case / f"{case}_{key}.nii.gz", (1.0, 1.0, 1.0))
        save_nifti(seg, source / case / f"{case}_seg.nii.gz", (1.0, 1.0, 1.0))
    (source / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,BraTS_2019_subject_ID,"
        "BraTS_2020_subject_ID\n"
        "HGG,Brats17_a,Brats18_a,BraTS19_a,BraTS20_Training_001\n"
        "LGG,Brats17_b,Brats18_b,BraTS19_b,BraTS20_Training_002\n"
    )
    summary = build_dataset(
        "expert-brats",
        source,
        tmp_path / "out",
        options={"kinds": "grade,segment", "questions_per_case": 2},
    )
    rows = read_dataset(tmp_path / "out")["train"]
    grades = {r["case"]: r["grade"] for r in rows if "grade" in r}
    assert grades == {"BraTS20_Training_001": "HGG", "BraTS20_Training_002": "LGG"}
    results = {r["conversations"][2]["value"].split("Use this result")[0] for r in rows}
    assert len(results) == 1  # label 3 (BraTS 2023) reads as the enhancing tumour 4
    assert "name_mapping.csv" in summary.manifest["source_checksums"]


def test_brats_mode_uses_the_real_expert(tmp_path: Path) -> None:
    from medm3.experts.brats import BratsExpert
    from medm3.testing.experts import write_brats_bundle

    bundle = write_brats_bundle(tmp_path / "bundle", roi=(16, 16, 8))
    source = write_brats(tmp_path / "src")
    build_dataset(
        "expert-brats",
        source,
        tmp_path / "out",
        options={
            "labels": "brats",
            "weights": str(bundle),
            "device": "cpu",
            "kinds": "segment",
            "questions_per_case": 1,
        },
    )
    row = read_dataset(tmp_path / "out")["train"][0]
    case = row["case"]
    named = _named(source / "HGG" / case, case)
    result = BratsExpert(device="cpu", weights=bundle).run(named, "", use_cache=False)
    from medm3.agent.protocol import get_protocol
    from medm3.imaging.palettes import reference_palette
    from medm3.imaging.slicing import take_slice

    labels = take_slice(np.asarray(result.label_map.array), "axial", row["slice"])
    colours = reference_palette(int(i) for i in np.unique(labels))
    feedback = get_protocol("released").brats_feedback(colours, row["question"])
    assert row_turns(row)[1][1] == "I segmented any brain tumors using <BRATS()>."
    assert row_turns(row)[2] == ("human", feedback)
    assert row_turns(row)[3] == ("gpt", "All tumors were segmented")

"""expert-vista3d: rows equal the prompts functions' output and the agent's own conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3 import prompts
from medm3.data.engine import build_dataset
from medm3.data.expert_vista3d import vista3d_id
from medm3.data.llava import read_dataset, row_images
from medm3.errors import InputError
from tests.data.fixtures import ct_phantom, read_tree, save_nifti, write_msd
from tests.data.replay import replay, row_turns

#: MSD fixture label values -> VISTA3D ids (liver, cancer -> hepatic tumor, spleen).
MSD_TO_VISTA = {0: 0, 1: 1, 2: 26, 3: 3}


def _vista_labels(seed: int) -> np.ndarray:
    _, labels = ct_phantom(seed, tumour=seed % 2 == 0)
    return np.vectorize(MSD_TO_VISTA.get)(labels).astype(np.uint8)


def _image(source: Path, seed: int) -> Any:
    from medm3.imaging.io import load_image

    return load_image(source / "imagesTr" / f"liver_{seed}.nii.gz", modality="CT")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("v3d")
    source = write_msd(root / "Task03_Liver")
    options = {"questions_per_volume": 6, "protocol": "medm3"}
    build_dataset("expert-vista3d", source, root / "out", options=options, seed=3)
    return source, root / "out"


@pytest.fixture(scope="module")
def built_released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("v3d-released")
    source = write_msd(root / "Task03_Liver")
    build_dataset(
        "expert-vista3d", source, root / "out", options={"questions_per_volume": 6}, seed=3
    )
    return source, root / "out"


def test_rows_are_the_prompts_functions_output(built: tuple[Path, Path]) -> None:
    from medm3.agent.protocol import get_protocol
    from medm3.experts import vista3d_labels as vl
    from medm3.experts.measure import measure_structures
    from medm3.experts.registry import model_cards
    from medm3.imaging.palettes import unique_palette
    from medm3.imaging.slicing import take_slice

    source, out = built
    rows = read_dataset(out)["train"]
    assert len(rows) == 12
    kinds = {r["question_type"] for r in rows}
    assert kinds == {"what", "segment", "is-there", "how-many", "how-large"}
    cards = model_cards()
    for row in rows:
        seed = int(row["volume"].split("_")[1])
        labels, image = _vista_labels(seed), _image(source, seed)
        question = row["question"]
        turns = row_turns(row)
        args = row["experts"][0][len("<VISTA3D(") : -2]
        wanted = vl.expand_prompt(vl.prompt_ids(args))
        subset = np.where(np.isin(labels, wanted), labels, 0)
        found = [int(i) for i in np.unique(subset) if i > 0]
        on_slice = [int(i) for i in np.unique(take_slice(subset, "axial", row["slice"])) if i > 0]
        colours = unique_palette(on_slice)
        pairs = [(colours[i], vl.VISTA3D_LABELS[i]) for i in on_slice]
        protocol = get_protocol("medm3")
        assert turns[0] == ("human", prompts.first_turn(question, "CT", model_cards=cards))
        assert turns[1] == ("gpt", prompts.trigger_reply("VISTA3D", args))
        assert turns[2] == ("human", protocol.segmentation_feedback(pairs, question))
        kind = row["question_type"]
        if kind in ("how-many", "how-large"):
            name = row["structure"]
            sid = vl.structure_id(name)
            rows_m = measure_structures(image, subset.astype(np.uint8), [(sid, name)])
            assert turns[3] == ("gpt", prompts.trigger_reply("MEASURE", name))
            text = prompts.measurement_text(rows_m)
            assert turns[4] == ("human", "<image>\n" + protocol.text_feedback(text, question))
            assert len(row_images(row)) == 3
        else:
            assert len(turns) == 4 and len(row_images(row)) == 2
        answer = turns[-1][1]
        if kind == "is-there":
            assert answer == ("yes" if 26 in found else "no")
        if kind == "how-many":
            assert answer == "There are 2 hepatic tumors."  # two tumour boxes in liver_0
        if kind == "segment":
            sid = vl.structure_id(row["structure"])
            assert answer == f"The {row['structure']} is shown in {colours[sid]}."
        for path in row_images(row):
            assert (out / path).is_file()


@pytest.mark.parametrize("which", ["built", "built_released"])
def test_agent_replays_every_row(
    which: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.data.reference_experts import ReferenceVista3D

    source, out = request.getfixturevalue(which)
    for row in read_dataset(out)["train"]:
        seed = int(row["volume"].split("_")[1])
        expert = ReferenceVista3D(_vista_labels(seed))
        turns, n_images = replay(row, _image(source, seed), {"vista3d": expert}, monkeypatch)
        assert turns == row_turns(row)
        assert n_images == len(row_images(row))


def test_deterministic(built: tuple[Path, Path], tmp_path: Path) -> None:
    source, out = built
    options = {"questions_per_volume": 6, "protocol": "medm3"}
    build_dataset("expert-vista3d", source, tmp_path / "again", options=options, seed=3)
    assert read_tree(tmp_path / "again") == read_tree(out)


@pytest.mark.parametrize(
    ("name", "tumor", "expected"),
    [
        ("liver", None, 1),
        ("Kidney_Left", None, 14),
        ("rib_left_1", None, 63),
        ("lung_upper_lobe_right", None, 30),
        ("cancer", 26, 26),
        ("Tumour", 24, 24),
        ("Vessel", None, 25),
        ("urinary_bladder", None, 15),
        ("background", None, 0),
        ("heart chamber", None, None),
    ],
)
def test_label_names_to_vista3d_ids(name: str, tumor: int | None, expected: int | None) -> None:
    assert vista3d_id(name, tumor) == expected


def test_unmapped_labels_and_label_map(tmp_path: Path) -> None:
    source = write_msd(tmp_path / "src", n=1)
    meta = json.loads((source / "dataset.json").read_text())
    meta["labels"]["3"] = "thing"
    (source / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"cannot map label\(s\) 3=thing .*--label-map"):
        build_dataset("expert-vista3d", source, tmp_path / "out")
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"1": "liver", "2": "hepatic tumor", "3": None}))
    summary = build_dataset(
        "expert-vista3d",
        source,
        tmp_path / "out",
        options={"label_map": str(label_map), "kinds": "segment", "questions_per_volume": 3},
    )
    rows = read_dataset(tmp_path / "out")["train"]
    assert {r["structure"] for r in rows} == {"liver"}  # spleen dropped
    assert any(k.endswith("map.json") for k in summary.manifest["source_checksums"])


def test_vista3d_mode_uses_the_real_expert(tmp_path: Path) -> None:
    from medm3.experts.vista3d import Vista3DExpert
    from medm3.testing.experts import write_vista3d_bundle

    bundle = write_vista3d_bundle(tmp_path / "bundle", roi=(64, 64, 32))
    ct, _ = ct_phantom(1, tumour=False)
    source = tmp_path / "cts"
    save_nifti(ct, source / "case_0000.nii.gz", (3.0, 3.0, 3.0))
    build_dataset(
        "expert-vista3d",
        source,
        tmp_path / "out",
        options={
            "weights": str(bundle),
            "device": "cpu",
            "kinds": "what",
            "questions_per_volume": 1,
        },
    )
    (row,) = read_dataset(tmp_path / "out")["train"]
    assert row["id"] == "expert-vista3d/case#q0"
    from medm3.imaging.io import load_image

    image = load_image(source / "case_0000.nii.gz", modality="CT")
    result = Vista3DExpert(device="cpu", weights=bundle).run(image, "everything", use_cache=False)
    from medm3.agent.protocol import get_protocol
    from medm3.imaging.palettes import reference_palette
    from medm3.imaging.slicing import take_slice

    on_slice = np.unique(take_slice(np.asarray(result.label_map.array), "axial", row["slice"]))
    colours = reference_palette(int(i) for i in on_slice)
    pairs = [(c, result.label_names[i]) for i, c in colours.items()]
    feedback = get_protocol("released").segmentation_feedback(pairs, row["question"])
    assert row_turns(row)[2] == ("human", feedback)


def test_released_rows_follow_the_trained_forms(built_released: tuple[Path, Path]) -> None:
    _, out = built_released
    rows = read_dataset(out)["train"]
    assert {r["question_type"] for r in rows} <= {"what", "segment", "is-there"}
    assert all(r["protocol"] == "released" for r in rows)
    for row in rows:
        turns = row_turns(row)
        assert "<VISTA2D(args)>" in turns[0][1] and "<MEASURE(args)>" not in turns[0][1]
        assert turns[0][1].count("<image>") == 1 and "<image>\nThis is a CT image.\n" in turns[0][1]
        if row["question_type"] == "segment":  # trained: the trigger reply is the answer
            assert len(turns) == 2 and turns[1][1].startswith("I segmented the ")
        else:
            assert turns[2][1].startswith("The results are <image>\n. The colors in this image")
        if row["question_type"] == "what":
            assert turns[3][1].startswith(
                "This a CT image. It contains several anatomical structures such as identified"
            )

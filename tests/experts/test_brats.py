"""BraTS expert: tiny random SegResNet bundle in the released layout, synthetic MR volumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3 import prompts
from medm3.experts.base import ExpertError, RunContext
from medm3.experts.brats import (
    CHANNEL_ORDER,
    LABEL_NAMES,
    BratsExpert,
    regions_to_labels,
    tumour_volumes,
)
from medm3.experts.bundle import UnusableWeightsError
from medm3.experts.catalogue import WeightsNotFoundError

from .conftest_brats_cxr import BRATS_SHAPE, box, mr_volume, support_volume, write_brats_bundle

SPACING = (1.0, 1.0, 2.0)


@pytest.fixture(autouse=True)
def _no_result_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDM3_NO_RESULT_CACHE", "1")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny bundle: network_def init_filters 8, roi = the synthetic volume size."""
    return write_brats_bundle(tmp_path_factory.mktemp("brats") / "brats_mri_segmentation")


@pytest.fixture(scope="module")
def expert(bundle: Path) -> BratsExpert:
    exp = BratsExpert(device="cpu", weights=bundle)
    exp.setup()
    return exp


# Distinct supports: t1ce, t1, t2, flair are nonzero in different (overlapping) boxes.
MASKS = {
    "t1ce": box(BRATS_SHAPE, (20, 20, 14), (36, 36, 30)),  # -> TC in the stub network
    "t1": box(BRATS_SHAPE, (12, 12, 8), (48, 48, 36)),  # -> WT
    "t2": box(BRATS_SHAPE, (28, 16, 20), (44, 30, 26)),  # -> ET
    "flair": box(BRATS_SHAPE, (4, 4, 4), (60, 60, 44)),
}


def synthetic_inputs(spacing: tuple[float, ...] = SPACING) -> dict[str, Any]:
    return {
        key: mr_volume(support_volume(MASKS[key], seed), spacing=spacing, source=f"{key}.nii.gz")
        for seed, key in enumerate(CHANNEL_ORDER)
    }


class Spy:
    """Wraps the expert's network; records its inputs; optionally replaces its output."""

    def __init__(self, net: Any, stub: bool) -> None:
        self.net, self.stub, self.inputs = net, stub, []

    def __call__(self, x: Any) -> Any:
        import torch

        self.inputs.append(x.detach().cpu().clone())
        if not self.stub:
            return self.net(x)
        # logits +10 where channel k is nonzero, else -10: TC <- t1ce, WT <- t1, ET <- t2
        return torch.where(x[:, :3] != 0, 10.0, -10.0)


@pytest.fixture
def spied(expert: BratsExpert, monkeypatch: pytest.MonkeyPatch):
    def install(stub: bool) -> Spy:
        spy = Spy(expert._net, stub)
        monkeypatch.setattr(expert, "_net", spy)
        return spy

    return install


def test_card_and_registry() -> None:
    from medm3.experts.registry import get_expert_class

    assert get_expert_class("BRATS") is BratsExpert
    card = BratsExpert.model_card()
    assert card.startswith("<BRATS(args)> Modality: MRI, Task: segmentation, Overview: A pre")
    assert "Average: 0.8518" in card and card.endswith("Valid args are: None")
    assert BratsExpert.inputs == ("t1ce", "t1", "t2", "flair")


def test_channel_order_is_bundle_order(expert: BratsExpert, spied) -> None:
    spy = spied(stub=False)
    expert.run(synthetic_inputs())
    (x,) = spy.inputs  # roi == volume size: one window
    assert tuple(x.shape) == (1, 4, *BRATS_SHAPE)
    for channel, key in enumerate(CHANNEL_ORDER):
        assert np.array_equal(x[0, channel].numpy() != 0, MASKS[key]), key
        inside = x[0, channel].numpy()[MASKS[key]]
        assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-2  # nonzero z-score


def test_label_map_from_hand_set_logits(expert: BratsExpert, spied) -> None:
    spied(stub=True)
    inputs = synthetic_inputs()
    result = expert.run(inputs, context=RunContext(options={"overlay_on": "t1ce"}))
    tc, wt, et = MASKS["t1ce"], MASKS["t1"], MASKS["t2"]
    expected = np.zeros(BRATS_SHAPE, np.uint8)
    expected[wt] = 2
    expected[tc] = 1
    expected[et] = 4
    labels = result.label_map.array
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert result.label_map.spatial_shape == BRATS_SHAPE
    assert np.array_equal(result.label_map.affine, inputs["flair"].affine)
    assert result.label_names == LABEL_NAMES
    # volumes (voxel = 2 mm^3)
    vols = {m["abbreviation"]: m for m in result.measurements}
    assert vols["ET"]["voxels"] == et.sum()
    assert vols["TC"]["voxels"] == (tc | et).sum()
    assert vols["WT"]["voxels"] == (tc | wt | et).sum()
    assert vols["WT"]["volume_ml"] == pytest.approx((tc | wt | et).sum() * 2.0 / 1000, abs=1e-3)
    # text: BraTS phrasing with the overlay colour names of labels 1, 2, 4
    from medm3.imaging.overlay import label_color_name

    colours = {k: label_color_name(k) for k in (1, 2, 4)}
    assert result.text == prompts.brats_text(colours)
    assert f"{colours[1]} and {colours[4]}: tumor core" in result.text
    # overlay: axial slice with the largest tumour area
    (overlay,) = result.overlays
    # whole-tumour area ties on z 8..35; the tie goes to the most core, then most ET
    # (z 20..25), then to the slice nearest the middle of the tumour (z 8..35: 21.5)
    assert overlay.plane == "axial" and overlay.slice_index == 21
    assert overlay.image.mode == "RGB" and "T1CE" in overlay.caption
    assert result.info["channel_order"] == list(CHANNEL_ORDER)


def test_regions_to_labels_precedence() -> None:
    regions = np.zeros((3, 2, 3, 1), bool)
    regions[1] = True  # WT everywhere
    regions[0, 0] = True  # TC in row 0
    regions[2, :, 0] = True  # ET in column 0
    labels = regions_to_labels(regions)[..., 0]
    assert labels.tolist() == [[4, 1, 1], [4, 2, 2]]
    vols = tumour_volumes(regions_to_labels(regions), 1000.0)
    assert [v["volume_ml"] for v in vols] == [4.0, 6.0, 2.0]  # TC, WT, ET


def test_default_slice_breaks_area_ties_by_core_then_enhancing() -> None:
    from medm3.experts.brats import TIEBREAK
    from medm3.experts.views import overlay_slice

    labels = np.zeros((4, 4, 5), np.uint8)
    assert overlay_slice(labels, "axial", tiebreak=TIEBREAK) == 2  # no tumour: middle
    labels[:2, :2, 1] = 2  # area 4, edema only
    labels[:2, :2, 3] = [[2, 1], [4, 2]]  # area 4, with core and ET
    labels[:1, :3, 4] = 2  # area 3
    assert overlay_slice(labels, "axial", tiebreak=TIEBREAK) == 3
    assert overlay_slice(labels, "sagittal", tiebreak=TIEBREAK) == 0


def test_tiny_network_end_to_end(expert: BratsExpert) -> None:
    result = expert.run(synthetic_inputs())
    labels = result.label_map.array
    assert labels.shape == BRATS_SHAPE
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}
    assert result.text.startswith(prompts.SEGMENTATION_PREFIX.rstrip(" "))
    assert result.info["roi_size"] == list(BRATS_SHAPE)  # read from the bundle config
    assert result.info["device"] == "cpu" and len(result.info["weights_version"]) == 16
    assert {"inference", "setup", "run", "total"} <= set(result.timings)
    assert len(result.overlays) == 1


def test_real_mri_padded_to_roi(expert: BratsExpert, mr_path: Path) -> None:
    from medm3.imaging import load_image

    t1 = load_image(mr_path)  # 33 x 41 x 25: smaller than the roi, not a multiple of 8
    result = expert.run({"t1ce": t1, "t1": t1, "t2": t1, "flair": t1})
    assert result.label_map.spatial_shape == t1.spatial_shape
    assert np.array_equal(result.label_map.affine, t1.affine)


def test_wrapped_state_dict_and_default_network(tmp_path: Path) -> None:
    wrapped = write_brats_bundle(tmp_path / "wrapped", wrap=True)
    exp = BratsExpert(device="cpu", weights=wrapped)
    exp.setup()
    assert exp._net.init_filters == 8
    # no configs/inference.json: the released SegResNet (16 filters) and roi 240x240x160
    bare = write_brats_bundle(tmp_path / "bare", init_filters=16, config=False)
    exp = BratsExpert(device="cpu", weights=bare)
    exp.setup()
    assert exp._net.init_filters == 16 and exp._roi == (240, 240, 160)


def test_checkpoint_mismatch_is_reported(tmp_path: Path) -> None:
    folder = write_brats_bundle(tmp_path / "b", init_filters=8, weights_filters=16)
    with pytest.raises(UnusableWeightsError, match="does not match") as info:
        BratsExpert(device="cpu", weights=folder).setup()
    assert info.value.exit_code == 2 and info.value.path == str(folder / "models" / "model.pt")


@pytest.mark.parametrize("damage", ["corrupt_checkpoint", "bad_json", "no_state_dict"])
def test_unusable_weights_exit_2_naming_the_file(tmp_path: Path, damage: str) -> None:
    import torch

    folder = write_brats_bundle(tmp_path / "b", init_filters=8)
    if damage == "corrupt_checkpoint":
        bad = folder / "models" / "model.pt"
        bad.write_bytes(b"\x80\x04not a pickle at all")
        match = "cannot read the BraTS checkpoint"
    elif damage == "bad_json":
        bad = folder / "configs" / "inference.json"
        bad.write_text("{not json", encoding="utf-8")
        match = "cannot read the bundle config"
    else:
        bad = folder / "models" / "model.pt"
        torch.save({"epoch": 3}, bad)
        match = "no state dict"
    with pytest.raises(UnusableWeightsError, match=match) as info:
        BratsExpert(device="cpu", weights=folder).setup()
    assert info.value.exit_code == 2 and info.value.path == str(bad)
    assert "\n" not in str(info.value)


def test_wrong_output_channels_are_unusable_weights(tmp_path: Path) -> None:
    folder = write_brats_bundle(tmp_path / "b", init_filters=8)
    config = folder / "configs" / "inference.json"
    doc = json.loads(config.read_text())
    doc["network_def"]["out_channels"] = 2
    config.write_text(json.dumps(doc))
    state = BratsExpert(device="cpu", weights=folder)
    from monai.networks.nets import SegResNet

    kwargs = {k: v for k, v in doc["network_def"].items() if not k.startswith("_")}
    import torch

    torch.save(SegResNet(**kwargs).state_dict(), folder / "models" / "model.pt")
    with pytest.raises(UnusableWeightsError, match="2 output channels") as info:
        state.run(synthetic_inputs())
    assert info.value.exit_code == 2 and info.value.path == str(config)


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"models/model\.pt"):
        BratsExpert(device="cpu", weights=tmp_path).setup()


def test_grid_mismatch_names_the_input(expert: BratsExpert) -> None:
    inputs = synthetic_inputs()
    inputs["t2"] = mr_volume(np.ones((64, 64, 40), np.float32), spacing=SPACING)
    with pytest.raises(ExpertError, match=r"t2 has shape \(64, 64, 40\)"):
        expert.run(inputs)
    inputs = synthetic_inputs()
    shifted = inputs["flair"].affine.copy()
    shifted[0, 3] += 1.5
    inputs["flair"] = mr_volume(inputs["flair"].array, affine=shifted)
    with pytest.raises(ExpertError, match="affine of flair differs"):
        expert.run(inputs)


def test_missing_and_unnamed_inputs(expert: BratsExpert) -> None:
    inputs = synthetic_inputs()
    del inputs["flair"]
    with pytest.raises(ExpertError, match="needs the input"):
        expert.run(inputs)
    with pytest.raises(ExpertError, match="named"):
        expert.run(list(synthetic_inputs().values()))
    with pytest.raises(ExpertError, match="needs the input"):
        expert.run(synthetic_inputs()["t1"])  # a single image is not guessed to be all four


def test_wrong_modality_and_shape(expert: BratsExpert) -> None:
    inputs = synthetic_inputs()
    inputs["t1"] = mr_volume(inputs["t1"].array, spacing=SPACING, modality="CT")
    with pytest.raises(ExpertError, match="works on MR images"):
        expert.run(inputs)
    inputs = synthetic_inputs()
    inputs["t2"] = mr_volume(np.ones((*BRATS_SHAPE, 4), np.float32), spacing=SPACING)
    with pytest.raises(ExpertError, match="4 channels"):
        expert.run(inputs)


def test_bad_overlay_option(expert: BratsExpert, spied) -> None:
    spied(stub=True)
    with pytest.raises(ExpertError, match="overlay_on"):
        expert.run(synthetic_inputs(), context=RunContext(options={"overlay_on": "dwi"}))


def test_saved_overlay_and_montage_show_ids_like_the_other_experts(
    expert: BratsExpert, spied, tmp_path: Path
) -> None:
    from medm3.experts.output import save_result, with_legend

    spied(stub=True)
    inputs = synthetic_inputs()
    result = expert.run(inputs)
    (overlay,) = result.overlays
    assert "T1CE" in overlay.caption  # the sequence the agent shows the model
    assert not overlay.image.info["medm3"]["legend"]  # drawn as the VLM would see it
    legend = with_legend(overlay.image, result.label_names).info["medm3"]["legend"]
    assert [e["name"] for e in legend] == [f"{i}: {LABEL_NAMES[i]}" for i in (1, 2, 4)]
    files = save_result(result, tmp_path, source_image=inputs["t1ce"], montage=True)
    assert Path(files["montage"]).name == "brats_montage.png"
    assert result.info["amp"] is None  # fp32 on the CPU; CUDA gives the dtype name, as VISTA3D
    meta = result.label_map.metadata  # the same label-map keys as VISTA3D's
    assert (meta["content"], meta["expert"], meta["image"]) == ("label_map", "brats", "t1ce.nii.gz")


def test_amp_is_the_autocast_dtype_name() -> None:
    import torch

    from medm3.experts import bundle

    assert bundle.amp_name(torch.bfloat16) == "bfloat16" and bundle.amp_name(None) is None

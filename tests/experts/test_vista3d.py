"""VISTA3D expert: tiny random-weight bundle in the released layout, real CT + phantoms."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3 import prompts
from medm3.errors import MedM3Error
from medm3.experts import vista3d_labels as vl
from medm3.experts.base import ExpertError, ExpertResult, RunContext
from medm3.experts.catalogue import WeightsNotFoundError
from medm3.experts.vista3d import (
    DEFAULT_OVERLAP,
    DEFAULT_ROI,
    Vista3DExpert,
    load_network,
    load_state_dict,
    read_bundle,
)
from medm3.experts.vista3d_result import segmentation_result
from medm3.imaging.image import MedicalImage

from .vista3d_fixtures import (
    TINY_ROI,
    IntensityNetwork,
    box_phantom,
    ct_image,
    write_vista3d_bundle,
)


@pytest.fixture(autouse=True)
def _no_result_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDM3_NO_RESULT_CACHE", "1")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny VISTA3D bundle (8 filters, patch 128x128x64 in the config)."""
    return write_vista3d_bundle(tmp_path_factory.mktemp("vista3d") / "vista3d")


@pytest.fixture(scope="module")
def expert(bundle: Path) -> Vista3DExpert:
    exp = Vista3DExpert(device="cpu", weights=bundle)
    exp.setup()
    return exp


@pytest.fixture
def fake_expert(bundle: Path) -> tuple[Vista3DExpert, IntensityNetwork]:
    """An expert whose network is :class:`IntensityNetwork`, with 32^3 windows."""
    exp = Vista3DExpert(device="cpu", weights=bundle)
    exp.setup()
    net = IntensityNetwork()
    exp._network = net
    assert exp._settings is not None
    exp._settings = dataclasses.replace(exp._settings, roi_size=(32, 32, 32))
    return exp, net


# ------------------------------------------------------------------ card / args
def test_card_attributes() -> None:
    card = Vista3DExpert.model_card()
    assert card.startswith("<VISTA3D(args)> Modality: CT, Task: segmentation, Overview: ")
    assert "127 organs: 0.792 Dice on average" in card
    assert card.endswith("'skeleton', or 'muscles'")
    assert Vista3DExpert.open_args and Vista3DExpert.modalities == ("CT",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "everything"),
        ("", "everything"),
        ("Hepatic Tumor", "hepatic tumor"),
        ("'hepatic_tumor'", "hepatic tumor"),
        ("hepatoma", "hepatic tumor"),
        ("MUSCLES", "muscles"),
        ("liver, Spleen", "liver, spleen"),
        ("liver;spleen, liver", "liver, spleen"),
        ("vertebrae l5, 3", "vertebrae L5, spleen"),
        ("liver, hepatic tumor", "liver, hepatic tumor"),
        ("kidney", "kidney"),
    ],
)
def test_parse_args(raw: str | None, expected: str) -> None:
    assert Vista3DExpert().parse_args(raw) == expected


@pytest.mark.parametrize(("raw", "suggestion"), [("livr", "liver"), ("hepatic tumour", "hepatic")])
def test_bad_arg_did_you_mean(raw: str, suggestion: str) -> None:
    with pytest.raises(ExpertError) as info:
        Vista3DExpert().parse_args(f"spleen, {raw}")
    message = str(info.value)
    assert "Did you mean" in message and suggestion in message  # utils.suggest's wording
    assert "'everything'" in message  # lists the valid args


def test_unknown_arg_without_suggestion() -> None:
    with pytest.raises(ExpertError, match="not a valid argument for VISTA3D"):
        Vista3DExpert().parse_args("qqqqqqq")


def test_label_tables() -> None:
    assert len(vl.VISTA3D_LABELS) == 132
    assert len(vl.EVERYTHING) == 117
    assert set(vl.EVERYTHING) == set(range(1, 133)) - {
        2, 16, 18, 20, 21, 23, 24, 25, 26, 27, 128, 129, 130, 131, 132
    }  # fmt: skip
    assert vl.SUBCLASS[2] == (14, 5)
    assert vl.SUBCLASS[20] == (28, 29, 30, 31, 32)
    assert vl.SUBCLASS[21] == (*range(33, 57), *range(63, 98), 114, 120, 122)
    assert set(Vista3DExpert.valid_args) == set(vl.LABEL_GROUPS)


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        ("hepatic tumor", (1, 26)),
        ("pancreatic tumor", (4, 24)),
        ("lung tumor", (28, 29, 30, 31, 32, 23)),
        ("bone lesion", (128,)),
        ("kidney", (14, 5)),
        ("liver, spleen", (1, 3)),
        ("gastrointestinal", (11, 12, 13, 15, 19, 62)),
        ("muscles", tuple(range(98, 108))),
    ],
)
def test_prompt_ids(args: str, ids: tuple[int, ...]) -> None:
    assert Vista3DExpert.prompt_ids(args) == ids


def test_group_expansion() -> None:
    assert Vista3DExpert.prompt_ids("everything") == vl.EVERYTHING
    skeleton = Vista3DExpert.prompt_ids("skeleton")
    assert 21 not in skeleton and {33, 63, 114, 120, 122, 127, 128} <= set(skeleton)
    assert len(skeleton) == len(set(skeleton))
    organs = Vista3DExpert.prompt_ids("organs")
    assert 2 not in organs and 20 not in organs and {5, 14, 26, 132} <= set(organs)


# ---------------------------------------------------------------- bundle / weights
def test_read_bundle(bundle: Path, tmp_path: Path) -> None:
    settings = read_bundle(bundle)
    assert settings.roi_size == TINY_ROI and settings.overlap == 0.3
    assert settings.version == "0.5.9-test" and settings.spacing == (1.5, 1.5, 1.5)
    empty = read_bundle(tmp_path)
    assert (empty.roi_size, empty.overlap, empty.version) == (DEFAULT_ROI, DEFAULT_OVERLAP, "")


def test_load_state_dict_variants(tmp_path: Path) -> None:
    import torch

    state = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    for name, payload in [
        ("raw.pt", state),
        ("wrapped.pt", {"model": state, "epoch": 3}),
        ("ddp.pt", {f"module.{k}": v for k, v in state.items()}),
        ("ddp_wrapped.pt", {"model": {f"module.{k}": v for k, v in state.items()}}),
    ]:
        torch.save(payload, tmp_path / name)
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(state), name
    with pytest.raises(WeightsNotFoundError, match="checkpoint not found"):
        load_state_dict(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MedM3Error, match="cannot read"):
        load_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "nostate.pt")
    with pytest.raises(MedM3Error, match="no state dict"):
        load_state_dict(tmp_path / "nostate.pt")


@pytest.mark.parametrize(("wrap", "prefix"), [(True, False), (False, True), (True, True)])
def test_load_network_wrapped_checkpoints(tmp_path: Path, wrap: bool, prefix: bool) -> None:
    import torch

    folder = write_vista3d_bundle(tmp_path / "b", wrap=wrap, module_prefix=prefix, seed=7)
    net = load_network(read_bundle(folder))
    raw = torch.load(folder / "models" / "model.pt", weights_only=True)
    raw = raw["model"] if wrap else raw
    first = next(iter(raw))
    name = first.removeprefix("module.")
    assert torch.equal(net.state_dict()[name], raw[first])
    assert not any(p.is_meta for p in net.parameters()) and not net.training


def test_load_network_non_persistent_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network whose buffers are not all in the checkpoint is built normally."""
    import torch

    from medm3.experts import vista3d_network

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("scale", torch.full((2,), 3.0), persistent=False)

    torch.save(Net().state_dict(), tmp_path / "model.pt")
    (tmp_path / "models").mkdir()
    (tmp_path / "model.pt").rename(tmp_path / "models" / "model.pt")
    monkeypatch.setattr(vista3d_network, "build_network", lambda settings, skip_init=False: Net())
    net = load_network(read_bundle(tmp_path))
    assert torch.equal(net.scale, torch.full((2,), 3.0))


def test_load_network_released_expression_form(tmp_path: Path) -> None:
    expr = "$monai.networks.nets.vista3d132(encoder_embed_dim=8, in_channels=@input_channels)"
    folder = write_vista3d_bundle(tmp_path / "b", network_def=expr)
    net = load_network(read_bundle(folder))
    assert type(net).__name__ == "VISTA3D"


def test_checkpoint_mismatch_is_clear(tmp_path: Path) -> None:
    import json

    folder = write_vista3d_bundle(tmp_path / "b")
    config = json.loads((folder / "configs" / "inference.json").read_text())
    config["network_def"]["class_head"]["n_classes"] = 256
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(MedM3Error, match="does not match the network"):
        load_network(read_bundle(folder))


def test_missing_weights(tmp_path: Path) -> None:
    folder = write_vista3d_bundle(tmp_path / "b")
    (folder / "models" / "model.pt").unlink()
    exp = Vista3DExpert(device="cpu", weights=folder)
    with pytest.raises(WeightsNotFoundError, match=r"models/model\.pt"):
        exp.setup()
    with pytest.raises(WeightsNotFoundError):
        exp.weights_id()


def test_bad_network_def(tmp_path: Path) -> None:
    folder = write_vista3d_bundle(tmp_path / "b")
    cfg = folder / "configs" / "inference.json"
    cfg.write_text(cfg.read_text().replace("ClassMappingClassify", "NoSuchHead"))
    with pytest.raises(MedM3Error, match="cannot build the network"):
        load_network(read_bundle(folder))


# ---------------------------------------------------------------- inputs
def test_wrong_modality_and_2d(expert: Vista3DExpert) -> None:
    image, _ = box_phantom()
    mr = dataclasses.replace(image, modality="MR")
    with pytest.raises(ExpertError, match="works on CT"):
        expert.run(mr, "liver")
    flat = MedicalImage(
        array=np.zeros((32, 32), np.int16),
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        modality="CT",
        modality_source="caller",
        source="slice.png",
    )
    with pytest.raises(ExpertError, match="3D CT volume"):
        expert.run(flat, "liver")


# ---------------------------------------------------------------- real CT
def test_real_ct_run(expert: Vista3DExpert, ct_path: Path) -> None:
    """One real run of the tiny network on the shared CT (the slowest test, ~10 s)."""
    from medm3.imaging.overlay import label_color_name, legend_entries

    image = ct_image(ct_path)
    result = expert.run(image, "Liver, SPLEEN", use_cache=False)
    lm = result.label_map
    assert lm is not None
    assert lm.array.shape == image.array.shape == (122, 101, 30)
    assert np.allclose(lm.affine, image.affine) and lm.spacing == image.spacing
    assert lm.array.dtype == np.uint8
    found = sorted(int(i) for i in np.unique(lm.array) if i > 0)
    # The seeded tiny network (weights fixed by ``seed=0``) finds both structures asked
    # for and nothing else; an empty or partial result is a failure.
    assert found == [1, 3]
    assert all((lm.array == i).sum() > 0 for i in found)
    assert sorted(result.label_names) == found
    assert result.args == "liver, spleen"
    assert result.text.startswith(prompts.SEGMENTATION_PREFIX)
    pairs = [(label_color_name(i), vl.VISTA3D_LABELS[i]) for i in found]
    assert result.text == prompts.segmentation_text(pairs)
    legend = legend_entries(found, result.label_names)  # the overlay module's colours
    assert [(e.color_name, e.name) for e in legend] == pairs
    overlay = result.overlays[0]
    assert overlay.plane == "axial" and 0 <= overlay.slice_index < 30
    assert overlay.image.mode == "RGB" and min(overlay.image.size) >= 256
    info = result.info
    assert info["device"] == "cpu" and info["patch_size"] == list(TINY_ROI)
    assert info["amp"] is None  # no autocast on the CPU (same type as BraTS: dtype name or None)
    assert info["weights_version"] == expert.weights_id()
    assert info["label_prompt"] == [1, 3]
    assert info["preprocessed_shape"] == [243, 199, 59]
    assert {"preprocess", "inference", "postprocess", "render"} <= set(result.timings)


def test_requested_slice_and_plane() -> None:
    image, expected = box_phantom()
    result = segmentation_result(
        image, expected, "liver", RunContext(plane="coronal", slice_index=40)
    )
    assert result.overlays[0].name == "overlay_coronal_40"
    assert result.info["slice_choice"] == "requested"
    with pytest.raises(ExpertError, match="out of range"):
        segmentation_result(image, expected, "liver", RunContext(slice_index=99))


# ---------------------------------------------------------------- deterministic checks
@pytest.mark.parametrize("args", ["liver, spleen", "spleen, liver", "everything"])
def test_label_mapping_and_inversion_exact(
    fake_expert: tuple[Vista3DExpert, IntensityNetwork], args: str
) -> None:
    """A known box becomes the liver (id 1), another the spleen (id 3), voxel for voxel."""
    exp, net = fake_expert
    image, expected = box_phantom()
    result = exp.run(image, args, use_cache=False)
    assert result.label_map is not None
    np.testing.assert_array_equal(result.label_map.array, expected)
    assert result.label_names == {1: "liver", 3: "spleen"}
    assert len(net.calls) > 1  # several 32^3 windows were blended
    call = net.calls[0]
    assert call["transpose"] is True
    assert [int(i) for i in call["class_vector"].flatten()] == list(Vista3DExpert.prompt_ids(args))
    # tumour-free result: the overlay shows the axial slice with the largest area
    areas = np.count_nonzero(expected, axis=(0, 1))
    assert result.overlays[0].slice_index == int(np.argmax(areas))


def test_tumour_slice_first() -> None:
    image, expected = box_phantom()
    labels = expected.copy()
    labels[25:27, 31:33, 14] = 26  # a small "hepatic tumor" on slice 14
    result = segmentation_result(image, labels, "hepatic tumor", RunContext())
    assert result.overlays[0].slice_index == 14
    assert "hepatic tumor" in result.text
    assert result.label_map.metadata["content"] == "label_map"
    assert result.label_map.metadata["expert"] == "vista3d"


def test_point_prompt_mapping(fake_expert: tuple[Vista3DExpert, IntensityNetwork]) -> None:
    """A positive click on input voxel p labels exactly p after the round trip."""
    exp, net = fake_expert
    image, _ = box_phantom()
    point = [12, 20, 7]
    ctx = RunContext(options={"points": [point], "point_labels": [1]})
    result = exp.run(image, "liver", context=ctx, use_cache=False)
    assert result.label_map is not None
    hits = np.argwhere(result.label_map.array == 1).tolist()
    assert hits == [point]
    assert result.info["point_class"] == 1 and result.info["points"] == [[12.0, 20.0, 7.0]]
    assert len(net.calls) == 1 and net.calls[0]["point_labels"].tolist() == [[1]]


def test_point_prompt_special_class(fake_expert: tuple[Vista3DExpert, IntensityNetwork]) -> None:
    exp, net = fake_expert
    image, _ = box_phantom()
    ctx = RunContext(
        options={"points": [[12, 20, 7], [30, 35, 10]], "point_labels": [1, 0], "point_class": 26}
    )
    result = exp.run(image, "hepatic tumor", context=ctx, use_cache=False)
    # the bundle's VistaPreTransformd marks tumour clicks as special labels (3 / 2)
    assert net.calls[0]["point_labels"].tolist() == [[3, 2]]
    assert [int(i) for i in net.calls[0]["class_vector"].flatten()] == [26]
    assert result.label_names == {26: "hepatic tumor"}


@pytest.mark.parametrize(
    ("options", "args", "match"),
    [
        ({"points": [[1, 2, 3]]}, "everything", "one structure"),
        ({"points": [[1, 2, 3]]}, "kidney", "stands for several"),
        ({"points": [[100, 2, 3]]}, "liver", "outside the volume"),
        ({"points": [[1, 2]]}, "liver", "voxel indices"),
        ({"points": [[1, 2, 3]], "point_labels": [2]}, "liver", "point_labels"),
        ({"points": [[1, 2, 3]], "point_class": "livr"}, "organs", "Did you mean 'liver'"),
    ],
)
def test_point_prompt_errors(
    fake_expert: tuple[Vista3DExpert, IntensityNetwork],
    options: dict[str, Any],
    args: str,
    match: str,
) -> None:
    exp, _ = fake_expert
    image, _ = box_phantom()
    with pytest.raises(ExpertError, match=match):
        exp.run(image, args, context=RunContext(options=options), use_cache=False)


def test_real_network_point_prompt(expert: Vista3DExpert) -> None:
    """The tiny real network accepts class + point prompts through the point-window inferer."""
    image, _ = box_phantom()
    ctx = RunContext(options={"points": [[12, 20, 7]]})
    result = expert.run(image, "liver", context=ctx, use_cache=False)
    assert result.label_map is not None and result.label_map.array.shape == image.array.shape
    # The seeded tiny network segments something around the point, and only label 1.
    assert set(np.unique(result.label_map.array)) == {0, 1}


# ---------------------------------------------------------------- cache
def test_derive_from_cache(fake_expert: tuple[Vista3DExpert, IntensityNetwork]) -> None:
    exp, _ = fake_expert
    image, expected = box_phantom()
    everything = exp.run(image, "everything", use_cache=False)
    asked: list[str] = []

    def lookup(args: str) -> ExpertResult | None:
        asked.append(args)
        return everything if args == "everything" else None

    inputs = {"image": image}
    liver = exp.derive_from_cache(lookup, inputs, "liver")
    assert liver is not None and liver.label_map is not None
    np.testing.assert_array_equal(liver.label_map.array, np.where(expected == 1, 1, 0))
    assert liver.label_names == {1: "liver"} and liver.info["derived_from"] == "everything"
    assert liver.text == prompts.segmentation_text([("red", "liver")])
    cardio = exp.derive_from_cache(lookup, inputs, "cardiovascular")
    assert cardio is not None and not cardio.label_names
    assert cardio.text.endswith("no structures found. ")
    assert exp.derive_from_cache(lookup, inputs, "hepatic tumor") is None  # 26 not in everything
    assert exp.derive_from_cache(lookup, inputs, "organs") is None  # holds tumour ids
    assert exp.derive_from_cache(lookup, inputs, "everything") is None
    assert exp.derive_from_cache(lambda a: None, inputs, "liver") is None
    assert asked == ["everything", "everything"]


def test_result_cache_end_to_end(
    fake_expert: tuple[Vista3DExpert, IntensityNetwork], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.experts.cache import ResultCache

    monkeypatch.delenv("MEDM3_NO_RESULT_CACHE")
    exp, net = fake_expert
    exp.result_cache = ResultCache(disk=False)
    image, expected = box_phantom()
    first = exp.run(image, "everything")
    assert first.info["cache"] == "miss"
    calls = len(net.calls)
    again = exp.run(image, "everything")
    assert again.info["cache"] == "hit" and len(net.calls) == calls
    spleen = exp.run(image, "Spleen")
    assert spleen.info["cache"] == "derived" and len(net.calls) == calls
    np.testing.assert_array_equal(spleen.label_map.array, np.where(expected == 3, 3, 0))
    tumour = exp.run(image, "hepatic tumor")
    assert tumour.info["cache"] == "miss" and len(net.calls) > calls


# ---------------------------------------------------------------- full size (slow)
@pytest.mark.slow
def test_full_size_vista3d132(tmp_path: Path) -> None:
    """The released architecture (no network_def: vista3d132) loads strictly and runs."""
    folder = write_vista3d_bundle(tmp_path / "vista3d", config=False)
    exp = Vista3DExpert(device="cpu", weights=folder)
    image, _ = box_phantom(shape=(40, 40, 20))
    result = exp.run(image, "liver, spleen", use_cache=False)
    assert result.info["patch_size"] == list(DEFAULT_ROI)
    assert result.label_map is not None and result.label_map.array.shape == (40, 40, 20)

"""CXR expert: random-weight TorchXRayVision models loaded through the real ``weights=`` path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3 import prompts
from medm3.experts.base import ExpertError, RunContext
from medm3.experts.catalogue import CXR_MODELS, WeightsNotFoundError
from medm3.experts.cxr import (
    LABELS,
    REFERENCE_GROUPS,
    CXRExpert,
    import_xrv,
    intensity_max,
    model_support,
    normalise,
    to_grayscale,
)
from medm3.imaging.image import MedicalImage

from . import conftest_brats_cxr as helpers
from .conftest_brats_cxr import LoadedCXR, spy_xrv_constructors

# session fixtures shared with the helper module (random xrv weights + the loaded expert)
cxr_weights_dir = helpers.cxr_weights_dir
cxr_loaded = helpers.cxr_loaded


@pytest.fixture(autouse=True)
def _no_result_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDM3_NO_RESULT_CACHE", "1")


@pytest.fixture
def png(cxr_png_path: Path) -> MedicalImage:
    from medm3.imaging import load_image

    return load_image(cxr_png_path)


@pytest.fixture
def mono1(cxr_mono1_path: Path) -> MedicalImage:
    from medm3.imaging import load_image

    return load_image(cxr_mono1_path)


def xray(array: np.ndarray, **metadata: Any) -> MedicalImage:
    return MedicalImage(
        array=array,
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        modality="XR",
        modality_source="caller",
        source="synthetic",
        metadata=dict(metadata),
    )


def check_result(result: Any) -> None:
    assert list(result.probabilities) == list(LABELS)
    assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    assert result.findings == {k: p > 0.5 for k, p in result.probabilities.items()}
    lines = result.text.splitlines()
    assert lines[0] == prompts.CLASSIFICATION_HEADER and lines[-1] != "."  # no stray line
    body = lines[1:]
    assert [b.split(":")[0] for b in body] == [k.lower().replace("_", " ") for k in LABELS]
    assert all(line.endswith((": yes", ": no")) for line in body)
    assert "pleural thickening: " in result.text  # xrv name lower-cased, "_" -> " "
    assert result.text == prompts.classification_text(result.findings)


def test_card_and_labels() -> None:
    xrv = import_xrv()
    assert tuple(xrv.datasets.default_pathologies) == LABELS
    assert CXRExpert.model_card() == (
        "<CXR(args)> Modality: chest x-ray (CXR), Task: classification, Overview: pre-trained "
        "model which are trained on large cohorts of data, Accuracy: Good accuracy across "
        "several diverse chest x-rays datasets, Valid args are: None"
    )
    assert all(set(group) <= set(CXR_MODELS) for group in REFERENCE_GROUPS.values())


def test_light_import_and_warning_filters_kept() -> None:
    # one subprocess (importing torch costs seconds): the expert modules import no
    # torch/monai/xrv; import_xrv() leaves no process-wide "ignore all warnings" filter
    code = (
        "import sys, warnings, medm3.experts.cxr as cxr, medm3.experts.brats; "
        "heavy = {'torch', 'monai', 'torchxrayvision'} & set(sys.modules); "
        "assert not heavy, heavy; "
        "cxr.import_xrv(); "
        "assert not [f for f in warnings.filters if f[0] == 'ignore' and f[1] is None "
        "and f[2] is Warning and f[3] is None], 'xrv silenced all warnings'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_loaded_once_through_weights_path(
    cxr_loaded: LoadedCXR, png: MedicalImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    expert = cxr_loaded.expert
    assert cxr_loaded.constructed == {"DenseNet": 7, "ResNet": 1}
    assert list(expert._models) == list(CXR_MODELS)
    for name, model in expert._models.items():
        assert model.weights == name
        assert Path(model.weights_filename_local).parent == cxr_loaded.weights
        assert model.op_threshs is not None  # xrv calibration active
    spy = spy_xrv_constructors(monkeypatch)
    first = expert.run(png, use_cache=False)
    second = expert.run(png, use_cache=False)
    assert spy.counts == {"DenseNet": 0, "ResNet": 0}
    assert first.probabilities == second.probabilities


def test_run_on_real_png(cxr_loaded: LoadedCXR, png: MedicalImage) -> None:
    result = cxr_loaded.expert.run(png, "")
    check_result(result)
    assert result.info["ensemble"] == "calibrated" and result.info["models"] == list(CXR_MODELS)
    assert result.overlays == [] and result.label_map is None


def test_run_on_real_monochrome1_dicom(cxr_loaded: LoadedCXR, mono1: MedicalImage) -> None:
    assert mono1.modality == "XR" and mono1.metadata.get("photometric") == "MONOCHROME1"
    check_result(cxr_loaded.expert.run(mono1))
    crop = normalise(mono1)
    assert crop.shape == (1, 1024, 1024) and crop.dtype == np.float32
    assert crop.min() >= -1024.0 and crop.max() <= 1024.0


def test_batch_equals_one_at_a_time(
    cxr_loaded: LoadedCXR, png: MedicalImage, mono1: MedicalImage
) -> None:
    expert = cxr_loaded.expert
    single = [expert.predict_batch([img])[0] for img in (png, mono1)]
    batched = expert.predict_batch([png, mono1, png], batch_size=2)  # chunks of 2 and 1
    for got, want in zip(batched, [*single, single[0]], strict=True):
        assert list(got) == list(want)
        np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-5)
    assert batched[0] != batched[1]
    assert expert.predict_batch([]) == []


def test_reference_ensemble_option(cxr_loaded: LoadedCXR, png: MedicalImage) -> None:
    expert = cxr_loaded.expert
    ref = expert.run(png, context=RunContext(options={"ensemble": "reference"}), use_cache=False)
    check_result(ref)
    assert ref.info["ensemble"] == "reference"
    assert ref.probabilities == expert.predict_batch([png], ensemble="reference")[0]
    with pytest.raises(ExpertError, match="unknown CXR ensemble"):
        expert.run(png, context=RunContext(options={"ensemble": "vote"}), use_cache=False)
    key = expert.cache_context({"image": png}, RunContext())
    assert key is not None and key["ensemble"] == "calibrated"


def test_sixteen_bit_normalisation(png: MedicalImage) -> None:
    eight = png.array
    assert eight.dtype == np.uint8 and intensity_max(png) == 255
    sixteen = xray(eight.astype(np.uint16) * 257)  # 16-bit PNG using the full range
    assert intensity_max(sixteen) == 65535
    np.testing.assert_allclose(normalise(sixteen), normalise(png), atol=1e-3)
    twelve = xray(eight.astype(np.uint16) * 16)  # 12-bit data in a uint16 container
    assert intensity_max(twelve) == 4095
    want = (2 * eight.astype(np.float64) * 16 / 4095 - 1) * 1024
    np.testing.assert_allclose(normalise(twelve)[0], want, atol=1e-3)
    stored = xray(eight.astype(np.uint16) * 16, bits_stored=16)  # reader knows the depth
    assert intensity_max(stored) == 65535
    unit = xray(eight.astype(np.float32) / 255.0)
    np.testing.assert_allclose(normalise(unit), normalise(png), atol=1e-2)
    signed = xray(eight.astype(np.int16) - 100)  # negative values: shifted to 0..range
    np.testing.assert_allclose(normalise(signed), normalise(png), atol=1e-2)
    n = normalise(png)
    assert n.min() == -1024.0 and n.max() == 1024.0


def test_grayscale_and_crop() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 100
    rgb[..., 1] = 200
    gray = to_grayscale(rgb)
    assert gray.shape == (4, 6)
    np.testing.assert_allclose(gray, 0.299 * 100 + 0.587 * 200)
    tall = np.arange(10 * 4, dtype=np.uint8).reshape(10, 4)
    crop = normalise(xray(tall))
    assert crop.shape == (1, 4, 4)
    np.testing.assert_allclose(crop[0], (2 * tall[3:7] / 255.0 - 1) * 1024, rtol=1e-6)


def test_rejects_volumes_and_other_modalities(cxr_loaded: LoadedCXR) -> None:
    expert = cxr_loaded.expert
    ct = MedicalImage(
        np.zeros((8, 8, 8), np.int16), (1.0, 1.0, 1.0), np.eye(4), "CT", "caller", "ct.nii"
    )
    with pytest.raises(ExpertError, match="works on XR images"):
        expert.run(ct)
    volume = MedicalImage(
        np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0), np.eye(4), "XR", "caller", "v.nii"
    )
    with pytest.raises(ExpertError, match="3D volume"):
        expert.run(volume)
    with pytest.raises(ExpertError, match="takes no arguments"):
        expert.run(xray(np.zeros((8, 8), np.uint8)), "lungs")


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        CXRExpert(device="cpu", weights=tmp_path).setup()


class StubModel:
    """Stands in for a loaded xrv model: real targets/op_threshs, hand-set calibrated output."""

    def __init__(self, name: str, value: float) -> None:
        import torch

        xrv = import_xrv()
        spec = xrv.models.model_urls[name]
        self.targets = spec["labels"]
        self.op_threshs = torch.tensor(spec["op_threshs"])
        self.input_resolution = spec["input_resolution"]
        # what xrv.models.op_norm gives: the value where calibrated, 0.5 elsewhere
        self.out = torch.tensor([value if np.isfinite(t) else 0.5 for t in spec["op_threshs"]])
        self.seen: list[tuple[int, ...]] = []

    def __call__(self, x: Any) -> Any:
        self.seen.append(tuple(x.shape))
        return self.out.expand(x.shape[0], -1).clone()


def test_per_label_average_over_supporting_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    short = ("all", "chex", "mimic_ch", "mimic_nb", "nih", "pc", "rsna", "resnet")
    v = dict(zip(short, (0.05, 0.15, 0.25, 0.35, 0.62, 0.72, 0.82, 0.92), strict=True))
    stubs = {name: StubModel(name, v[s]) for name, s in zip(CXR_MODELS, short, strict=True)}
    expert = CXRExpert(device="cpu")
    monkeypatch.setattr(expert, "_models", stubs)
    monkeypatch.setattr(expert, "_support", {n: model_support(m) for n, m in stubs.items()})
    monkeypatch.setattr(expert, "_device", torch.device("cpu"))
    monkeypatch.setattr(expert, "_ready", True)
    img = xray(np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8))
    (calibrated,) = expert.predict_batch([img])
    (reference,) = expert.predict_batch([img], ensemble="reference")

    def mean(*xs: float) -> float:
        return float(np.mean(xs))

    # only the models that predict a label (and have an operating point for it) count
    infiltration = mean(v["all"], v["nih"], v["pc"], v["resnet"])
    assert calibrated["Infiltration"] == pytest.approx(infiltration)
    assert calibrated["Pneumonia"] == pytest.approx(mean(*v.values()))
    lesion = mean(v["all"], v["chex"], v["mimic_ch"], v["mimic_nb"])  # not the ResNet (NaN)
    assert calibrated["Lung Lesion"] == pytest.approx(lesion)
    assert calibrated["Hernia"] == pytest.approx(infiltration)
    assert calibrated["Fracture"] == pytest.approx(
        mean(v["all"], v["chex"], v["mimic_ch"], v["mimic_nb"], v["pc"], v["resnet"])
    )
    # reference: fixed subsets for 8 labels, all models elsewhere, 0.5 fill included
    assert reference["Pneumothorax"] == pytest.approx(v["resnet"])  # resnet50-res512-all only
    fracture = mean(v["all"], 0.5, v["chex"], v["resnet"])  # nih has no Fracture -> 0.5
    assert reference["Fracture"] == pytest.approx(fracture)
    opacity = [v["all"], v["chex"], v["mimic_ch"], v["mimic_nb"], 0.5, 0.5, v["rsna"], v["resnet"]]
    assert reference["Lung Opacity"] == pytest.approx(mean(*opacity))
    every = [v["all"], 0.5, 0.5, 0.5, v["nih"], v["pc"], 0.5, v["resnet"]]
    assert reference["Infiltration"] == pytest.approx(mean(*every))
    assert calibrated["Infiltration"] != pytest.approx(reference["Infiltration"])
    # each model saw one batch at its own resolution, after the center crop
    assert stubs["densenet121-res224-all"].seen == [(1, 1, 224, 224)] * 2
    assert stubs["resnet50-res512-all"].seen == [(1, 1, 512, 512)] * 2


def test_reference_mode_matches_the_reference_demo_loop(
    cxr_loaded: LoadedCXR, png: MedicalImage
) -> None:
    """Parity: the demo normalised with maxval 255, center-cropped, fed the full-size
    crop (each xrv model resizes it itself) and averaged per label over its groups."""
    import torch

    xrv = import_xrv()
    expert = cxr_loaded.expert
    crop = xrv.datasets.XRayCenterCrop()(xrv.datasets.normalize(png.array, 255)[None])
    x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
    per_label: dict[str, list[float]] = {label: [] for label in LABELS}
    with torch.inference_mode():
        for name, model in expert._models.items():
            for label, value in zip(LABELS, model(x)[0].tolist(), strict=True):
                if label not in REFERENCE_GROUPS or name in REFERENCE_GROUPS[label]:
                    per_label[label].append(value)
    want = {label: float(np.mean(values)) for label, values in per_label.items()}
    got = expert.predict_batch([png], ensemble="reference")[0]
    assert list(got) == list(want)
    np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-5)
    spread = np.ptp(list(got.values()))
    assert spread > 0.01  # the random test models are not saturated


def test_precomputed_cxr_gives_what_the_data_builders_fixed_expert_gives() -> None:
    """`PrecomputedCXR` replaces only the inference step; the data builders use the same class."""
    from medm3.data.reference_experts import FixedCXR
    from medm3.experts.cxr import PrecomputedCXR
    from tests.doubles import xray

    probabilities = {"Effusion": 0.8, "Atelectasis": 0.2, "Pneumothorax": 0.51}
    assert FixedCXR is PrecomputedCXR
    ours = PrecomputedCXR(probabilities).run(xray(), use_cache=False)
    assert "effusion: yes" in ours.text and "atelectasis: no" in ours.text
    assert "pneumothorax: yes" in ours.text  # 0.51 > 0.5
    assert list(ours.probabilities.items()) == list(probabilities.items())
    assert PrecomputedCXR(probabilities).predict_batch([xray(), xray()]) == [probabilities] * 2

"""Weights catalogue and downloads, without network: offline, failing and faked sources.

Downloads are never attempted for real: ``monai.bundle`` and ``torchxrayvision``
are replaced by small fakes in ``sys.modules`` that write files or raise.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from medm3.errors import MedM3Error
from medm3.experts import catalogue
from medm3.experts.catalogue import XRV_FILENAMES, WeightsNotFoundError
from medm3.experts.download import download_weights, weights_present

XRV_MODELS = catalogue.CXR_MODELS


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MEDM3_CACHE", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # torchxrayvision's ~/.torchxrayvision
    for var in ("HF_HUB_OFFLINE", "MEDM3_OFFLINE", "MEDM3_BUNDLE_SOURCE", "MEDM3_BUNDLE_REPO"):
        monkeypatch.delenv(var, raising=False)
    return root


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


class FakeBundleSource:
    """Stands in for ``monai.bundle.download``."""

    def __init__(self, *, fail: bool = False, write: bool = True) -> None:
        self.fail, self.write = fail, write
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        folder = Path(kwargs["bundle_dir"]) / kwargs["name"]
        (folder / "models").mkdir(parents=True)
        (folder / "models" / "model.pt.part").write_bytes(b"partial")
        if self.fail:
            raise ConnectionError("Failed to resolve 'github.com'")
        if self.write:
            (folder / "models" / "model.pt.part").rename(folder / "models" / "model.pt")
            (folder / "configs").mkdir()
            (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))


@pytest.fixture
def fake_monai(monkeypatch: pytest.MonkeyPatch) -> FakeBundleSource:
    source = FakeBundleSource()
    monai = types.ModuleType("monai")
    bundle = types.ModuleType("monai.bundle")
    bundle.download = source  # type: ignore[attr-defined]
    monai.bundle = bundle  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "monai", monai)
    monkeypatch.setitem(sys.modules, "monai.bundle", bundle)
    return source


class FakeXrv:
    """Stands in for torchxrayvision: URLs and a ``get_weights`` that may fail."""

    def __init__(self) -> None:
        self.fail_at: int | None = None
        self.calls: list[str] = []
        self.model_urls = {
            m: {"weights_url": f"https://example.invalid/v1/{m}-weights.pt"} for m in XRV_MODELS
        }

    def get_weights(self, weights: str, cache_dir: str | None = None) -> str:
        self.calls.append(weights)
        assert cache_dir is not None
        os.makedirs(cache_dir, exist_ok=True)  # as torchxrayvision does, even offline
        target = Path(cache_dir) / os.path.basename(self.model_urls[weights]["weights_url"])
        if self.fail_at is not None and len(self.calls) > self.fail_at:
            Path(str(target) + ".part").write_bytes(b"partial")
            raise ConnectionError("HTTPSConnectionPool(host='github.com'): Max retries exceeded")
        print("Downloading weights...")  # torchxrayvision prints to stdout
        target.write_bytes(b"weights")
        return str(target)


@pytest.fixture
def fake_xrv(monkeypatch: pytest.MonkeyPatch) -> FakeXrv:
    fake = FakeXrv()
    module = types.ModuleType("torchxrayvision")
    module.models = types.SimpleNamespace(  # type: ignore[attr-defined]
        model_urls=fake.model_urls, get_weights=fake.get_weights
    )
    monkeypatch.setitem(sys.modules, "torchxrayvision", module)
    return fake


# ------------------------------------------------------------- catalogue
def test_cache_root_and_folders(cache: Path) -> None:
    assert catalogue.cache_root() == cache
    assert catalogue.weights_dir("vista3d") == cache / "bundles" / "vista3d"
    assert catalogue.weights_dir("brats") == cache / "bundles" / "brats_mri_segmentation"
    assert catalogue.weights_dir("cxr") == cache / "torchxrayvision"
    with pytest.raises(MedM3Error, match="no weights named 'nope'"):
        catalogue.get_spec("nope")


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "MEDM3_OFFLINE"])
def test_offline_flag(cache: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    assert not catalogue.offline()
    monkeypatch.setenv(var, "1")
    assert catalogue.offline()


def test_resolve_weights_message(cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        catalogue.resolve_weights("brats")
    message = str(info.value)
    folder = cache / "bundles" / "brats_mri_segmentation"
    assert f"not found in {folder}" in message and "models/model.pt" in message
    assert "m3 experts download brats" in message
    assert "python -m monai.bundle download --name brats_mri_segmentation" in message
    assert info.value.exit_code == 3


def test_checksums_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bundle"
    (folder / "models").mkdir(parents=True)
    weights = folder / "models" / "model.pt"
    weights.write_bytes(b"abc")
    digest = catalogue.file_sha256(weights)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (folder / "models" / ".model.pt.sha256.json").is_file()  # memoised
    spec = catalogue.CATALOGUE["brats"]
    monkeypatch.setitem(
        catalogue.CATALOGUE,
        "brats",
        type(spec)(**{**spec.__dict__, "sha256": {"models/model.pt": "0" * 64}}),
    )
    with pytest.raises(WeightsNotFoundError, match="checksum mismatch"):
        catalogue.resolve_weights("brats", folder)
    first = catalogue.weights_version("brats", folder)
    os.utime(weights, ns=(1, 1))
    assert catalogue.weights_version("brats", folder) != first


# -------------------------------------------------------------- download
def test_download_offline_gives_manual_command(
    cache: Path, monkeypatch: pytest.MonkeyPatch, fake_monai: FakeBundleSource
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        download_weights("vista3d")
    message = str(info.value)
    assert "could not download the weights for 'vista3d'" in message
    assert str(cache / "bundles" / "vista3d") in message and "downloads are disabled" in message
    assert (
        f"python -m monai.bundle download --name vista3d --bundle_dir {cache / 'bundles'}"
        in message
    )
    assert fake_monai.calls == [] and leftovers(cache) == []


def test_bundle_download_failure_leaves_nothing(cache: Path, fake_monai: FakeBundleSource) -> None:
    fake_monai.fail = True
    with pytest.raises(WeightsNotFoundError) as info:
        download_weights("brats", progress=False)
    message = str(info.value)
    assert "ConnectionError: Failed to resolve 'github.com'" in message
    assert str(cache / "bundles" / "brats_mri_segmentation") in message
    assert "python -m monai.bundle download --name brats_mri_segmentation" in message
    assert len(message.splitlines()) == 1
    assert leftovers(cache) == []


def test_bundle_download_incomplete(cache: Path, fake_monai: FakeBundleSource) -> None:
    fake_monai.write = False
    with pytest.raises(WeightsNotFoundError, match=r"did not provide models/model\.pt"):
        download_weights("brats", progress=False)
    assert leftovers(cache) == []  # the incomplete bundle was not moved in
    fake_monai.write = True
    assert download_weights("brats", progress=False).is_dir()


def test_bundle_download_success_and_force(
    cache: Path, fake_monai: FakeBundleSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = download_weights("brats", progress=False)
    assert target == cache / "bundles" / "brats_mri_segmentation"
    assert (target / "models" / "model.pt").read_bytes() == b"partial"
    assert leftovers(cache / "bundles") == sorted(
        [
            "brats_mri_segmentation",
            "brats_mri_segmentation/configs",
            "brats_mri_segmentation/configs/metadata.json",
            "brats_mri_segmentation/models",
            "brats_mri_segmentation/models/model.pt",
        ]
    )
    call = fake_monai.calls[0]
    assert call["name"] == "brats_mri_segmentation" and call["progress"] is False
    assert "source" not in call  # MONAI's own default source
    assert download_weights("brats") == target and len(fake_monai.calls) == 1  # present: no-op
    monkeypatch.setenv("MEDM3_BUNDLE_SOURCE", "huggingface_hub")
    download_weights("brats", force=True, progress=False)
    assert fake_monai.calls[1]["source"] == "huggingface_hub"
    assert fake_monai.calls[1]["repo"] == "MONAI/brats_mri_segmentation"
    assert catalogue.resolve_weights("brats") == target


def test_xrv_download_failure_leaves_nothing(
    cache: Path, fake_xrv: FakeXrv, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_xrv.fail_at = 2  # two files arrive, the third fails half-way
    with pytest.raises(WeightsNotFoundError) as info:
        download_weights("cxr", progress=False)
    message = str(info.value)
    assert "ConnectionError" in message and str(cache / "torchxrayvision") in message
    assert "By hand: copy the 8 torchxrayvision checkpoint files there" in message
    assert "m3 doctor -v" in message and "wget" not in message and ".download-" not in message
    assert len(message) <= 300 + len(str(cache))
    assert leftovers(cache) == []  # no partial file, no empty folder
    assert capsys.readouterr().out == ""  # torchxrayvision's prints do not reach stdout


def test_xrv_download_success(
    cache: Path, fake_xrv: FakeXrv, capsys: pytest.CaptureFixture[str]
) -> None:
    target = download_weights("cxr", progress=True)
    assert target == cache / "torchxrayvision"
    names = [XRV_FILENAMES[m] for m in XRV_MODELS]
    assert sorted(p.name for p in target.iterdir()) == sorted(names)
    assert leftovers(cache) == sorted(["torchxrayvision", *(f"torchxrayvision/{n}" for n in names)])
    captured = capsys.readouterr()
    assert captured.out == "" and "cxr weights" in captured.err
    assert weights_present("cxr") and weights_present("cxr", exact=False)
    # Only missing files are fetched again.
    (target / XRV_FILENAMES[XRV_MODELS[0]]).unlink()
    fake_xrv.calls.clear()
    download_weights("cxr", progress=False)
    assert fake_xrv.calls == [XRV_MODELS[0]]


def test_weights_present_without_xrv(cache: Path) -> None:
    assert not weights_present("cxr", exact=False)
    folder = cache / "torchxrayvision"
    folder.mkdir(parents=True)
    for i in range(len(XRV_MODELS)):
        (folder / f"w{i}.pt").write_bytes(b"")
    assert weights_present("cxr", exact=False)
    assert not weights_present("brats")


def test_xrv_filenames_match_torchxrayvision():
    import os

    import torchxrayvision as xrv

    from medm3.experts.catalogue import CXR_MODELS, XRV_FILENAMES

    assert set(XRV_FILENAMES) == set(CXR_MODELS)
    for model, name in XRV_FILENAMES.items():
        assert name == os.path.basename(xrv.models.model_urls[model]["weights_url"])


def test_weights_in_torchxrayvision_home_are_found(cache: Path, fake_xrv: FakeXrv) -> None:
    """Checkpoints torchxrayvision downloaded itself (~/.torchxrayvision) need no second copy."""
    home = catalogue.xrv_home()
    assert home == cache.parent / "home" / ".torchxrayvision" / "models_data"
    assert not weights_present("cxr")
    home.mkdir(parents=True)
    for model in XRV_MODELS:
        (home / XRV_FILENAMES[model]).write_bytes(b"w")
    assert weights_present("cxr") and weights_present("cxr", exact=False)
    assert catalogue.resolve_weights("cxr") == home
    assert download_weights("cxr") == home and fake_xrv.calls == []  # nothing downloaded
    (cache / "torchxrayvision").mkdir(parents=True)  # the medm3 cache still comes first
    for model in XRV_MODELS:
        (cache / "torchxrayvision" / XRV_FILENAMES[model]).write_bytes(b"w")
    assert catalogue.resolve_weights("cxr") == cache / "torchxrayvision"


def test_missing_weights_messages_are_short(cache: Path, fake_xrv: FakeXrv) -> None:
    for name in ("cxr", "vista3d", "brats"):
        with pytest.raises(WeightsNotFoundError) as info:
            catalogue.resolve_weights(name)
        message = str(info.value)
        assert len(message.splitlines()) == 1
        budget = 300 + len(str(cache)) + len(str(catalogue.xrv_home()))  # paths aside
        assert len(message) <= budget, message
    assert "missing 8 of 8 files" in message or "model.pt" in message


def test_short_reason_keeps_the_first_sentence_whole_words() -> None:
    from medm3.experts.download import short_reason

    hint = (
        "Connection refused. Download the weights manually and put them "
        "into /tmp/.download-xyz/ then retry"
    )
    assert short_reason(ConnectionError(hint)) == "ConnectionError: Connection refused"
    long = ConnectionError("word " * 60)
    text = short_reason(long)
    assert len(text) <= 100 and text.endswith("word...")
    assert short_reason(ValueError()) == "ValueError"

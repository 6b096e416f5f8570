"""`m3 experts`: list, info, cards, run (measure on the real CT) and download offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medm3.experts.registry import BUILTIN_EXPERTS, model_cards
from tests.cli.helpers import assert_one_line_error, run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDM3_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["experts", "list"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TRIGGER", "MODALITY", "TASK", "WEIGHTS"]
    assert [line.split()[0] for line in lines[1:]][: len(BUILTIN_EXPERTS)] == list(BUILTIN_EXPERTS)
    measure = next(line for line in lines if line.startswith("measure"))
    assert "MEASURE" in measure and "measurement" in measure and "not needed" in measure
    vista = next(line for line in lines if line.startswith("vista3d"))
    assert vista.endswith("missing")
    code, out, _ = run(["experts", "list", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["measure"]["trigger"] == "MEASURE" and rows["measure"]["weights"] == "not needed"


def test_list_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from medm3.cli.main import main\n"
        "try:\n    main(['experts', 'list'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'monai', 'torchxrayvision', 'scipy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "MEDM3_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_info(capsys: pytest.CaptureFixture[str], _isolated_cache: Path) -> None:
    code, out, err = run(["experts", "info", "MEASURE"], capsys)
    assert code == 0, err
    assert out.startswith("measure (MEASURE): measurement, CT or MRI")
    assert "weights: none needed" in out and "model card: <MEASURE(args)>" in out
    code, out, err = run(["experts", "info", "vista3d"], capsys)
    assert code == 0, err
    folder = _isolated_cache / "bundles" / "vista3d"
    assert f"folder: {folder} (missing)" in out
    assert "get them with: m3 experts download vista3d" in out
    code, out, err = run(["experts", "info", "vista3d", "--json"], capsys)
    facts = json.loads(out)
    assert facts["weights"]["folder"] == str(folder) and facts["weights"]["present"] is False
    assert facts["weights"]["bundle"] == "vista3d"
    code, _, err = run(["experts", "info", "vista"], capsys)
    assert_one_line_error(code, err, "Did you mean 'vista3d'?")


def test_cards(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["experts", "cards"], capsys)
    assert code == 0, err
    assert out == model_cards()


def test_run_measure_json(
    ct_path: Path,
    ct_labels_path: Path,
    ct_label_names_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "out" / "measure"
    args = ["experts", "run", "measure", str(ct_path), "--mask", str(ct_labels_path)]
    args += ["--labels", str(ct_label_names_path), "--arg", "liver, spleen", "--json"]
    code, out, err = run([*args, "-o", str(out_dir)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["expert"] == "measure" and doc["trigger"] == "<MEASURE(liver, spleen)>"
    liver, spleen = doc["measurements"]
    assert liver["name"] == "liver" and liver["voxels"] == 38634
    assert liver["volume_ml"] == pytest.approx(1043.118, abs=1e-9)
    assert spleen["name"] == "spleen"
    assert doc["text"].startswith("The measurements are:\nliver: volume 1043.1 mL")
    written = sorted(p.name for p in out_dir.iterdir())
    overlays = [o["name"] + ".png" for o in doc["overlays"]]  # one per structure
    assert len(overlays) == 2 and written == sorted(["result.json", *overlays])
    assert doc["files"] == {
        **{f"overlay:{o[:-4]}": str(out_dir / o) for o in overlays},
        "result": str(out_dir / "result.json"),
    }
    saved = json.loads((out_dir / "result.json").read_text())
    assert saved["files"] == {
        **{f"overlay:{o[:-4]}": o for o in overlays},
        "result": "result.json",
    }
    assert saved["measurements"] == doc["measurements"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["measure"]  # no temp dir left


def test_run_measure_text(
    ct_path: Path, ct_labels_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["experts", "run", "measure", f"image={ct_path}", f"mask={ct_labels_path}", "--arg", "5"],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "The measurements are:"
    assert lines[1].startswith("label 5: volume 1043.1 mL")  # no names given
    assert lines[2].startswith("timings: ") and "(cache: off)" in lines[2]
    assert not any(line.startswith("wrote") for line in lines)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unknown_expert", "unknown expert 'measur'. Did you mean 'measure'?"),
        ("wrong_modality", "MEASURE works on CT/MR images"),
        ("no_mask", "run a segmentation expert first or pass a mask"),
        ("mismatched_mask", "mask grid does not match image"),
        ("missing_file", "nope.nii.gz"),
        ("bad_arg", "no structure named 'livr'"),
        ("unknown_input", "unknown input name 't9'"),
        ("mask_not_taken", "takes no mask"),
        ("bad_plane", "plane"),
    ],
)
def test_run_bad_input(
    case: str,
    needle: str,
    ct_path: Path,
    ct_labels_path: Path,
    cxr_png_path: Path,
    mr_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "out"
    ct, mask = str(ct_path), ["--mask", str(ct_labels_path)]
    args = {
        "unknown_expert": ["measur", ct],
        "wrong_modality": ["measure", str(cxr_png_path)],
        "no_mask": ["measure", ct],
        "mismatched_mask": ["measure", ct, "--mask", str(mr_path)],
        "missing_file": ["measure", str(tmp_path / "nope.nii.gz"), *mask],
        "bad_arg": ["measure", ct, *mask, "--arg", "livr"],
        "unknown_input": ["measure", f"t9={ct}"],
        "mask_not_taken": ["cxr", str(cxr_png_path), *mask],
        "bad_plane": ["measure", ct, *mask, "--plane", "diagonal"],
    }[case]
    code, out, err = run(["experts", "run", *args, "-o", str(out_dir)], capsys)
    assert_one_line_error(code, err, needle)
    assert out == ""
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m3-")]


def test_download_offline(capsys: pytest.CaptureFixture[str], _isolated_cache: Path) -> None:
    code, out, err = run(["experts", "download", "vista3d"], capsys)
    assert_one_line_error(code, err, "could not download the weights for 'vista3d'", exit_code=3)
    assert str(_isolated_cache / "bundles" / "vista3d") in err
    assert "python -m monai.bundle download --name vista3d" in err
    assert out == "" and not _isolated_cache.exists()
    code, out, err = run(["experts", "download", "measure"], capsys)
    assert code == 0 and out.strip() == "expert 'measure' needs no weights"
    code, out, err = run(["experts", "download", "nope"], capsys)
    assert_one_line_error(code, err, "unknown expert 'nope'")


def test_help_lists_experts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "experts" in out
    code, out, _ = run(["experts", "--help"], capsys)
    assert code == 0 and all(c in out for c in ("list", "info", "cards", "run", "download"))


def test_run_missing_weights_reported_after_the_input_is_checked(
    ct_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_cache: Path
) -> None:
    code, _, err = run(
        ["experts", "run", "vista3d", str(ct_path), "-o", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "weights for expert 'vista3d' not found", exit_code=3)
    assert "m3 experts download vista3d" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("cxr_on_ct", "CXR works on XR images, but image"),
        ("vista3d_on_xray", "VISTA3D works on CT images"),
        ("vista3d_on_2d_ct", "VISTA3D needs a 3D CT volume, but image"),
        ("brats_one_sequence", "needs the input(s): t1, t2, flair"),
    ],
)
def test_run_wrong_input_is_reported_before_weights(
    case: str,
    needle: str,
    ct_path: Path,
    cxr_png_path: Path,
    mr_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: a wrong input must not send the user to download weights first."""
    import medm3.experts.catalogue as catalogue

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights resolved before the input was validated")

    monkeypatch.setattr(catalogue, "resolve_weights", never)
    args = {
        "cxr_on_ct": ["cxr", str(ct_path)],
        "vista3d_on_xray": ["vista3d", str(cxr_png_path)],
        "vista3d_on_2d_ct": ["vista3d", str(cxr_png_path), "--modality", "CT"],
        "brats_one_sequence": ["brats", f"t1ce={mr_path}"],
    }[case]
    code, out, err = run(["experts", "run", *args, "-o", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, needle)
    assert "weights" not in err and out == "" and not (tmp_path / "o").exists()


def test_run_bad_device(ct_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["experts", "run", "measure", str(ct_path), "--device", "tpu"], capsys)
    assert_one_line_error(code, err, "invalid device 'tpu'")


def test_parse_images() -> None:
    from medm3.cli.experts_run import parse_images as _parse_images
    from medm3.errors import InputError

    inputs = ("t1ce", "t1", "t2", "flair")
    assert _parse_images(("T1=a.nii", "t2=b=c.nii"), inputs) == [
        ("t1", Path("a.nii")),
        ("t2", Path("b=c.nii")),
    ]
    assert _parse_images(("a.nii",), inputs) == [(None, Path("a.nii"))]
    with pytest.raises(InputError, match="given twice"):
        _parse_images(("t1=a", "T1=b"), inputs)
    with pytest.raises(InputError, match="all images"):
        _parse_images(("t1=a", "b.nii"), inputs)
    with pytest.raises(InputError, match="unknown input name 'x'"):
        _parse_images(("x=a",), inputs)


def test_run_options_cover_the_shared_run_keywords() -> None:
    from dataclasses import fields

    from medm3.cli.experts_run import RUN_OPTION_KEYS, RunOptions

    assert sorted(f.name for f in fields(RunOptions)) == sorted(RUN_OPTION_KEYS)

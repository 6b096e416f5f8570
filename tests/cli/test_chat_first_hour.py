"""`m3 chat` for a first hour: the mock script, a user's mask and labels, local weights,
commands with piped stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.helpers import assert_one_line_error, run
from tests.conftest import shared_ct as sample_ct
from tests.conftest import shared_ct_labels as sample_ct_labels


def _script(tmp_path: Path, *replies: str) -> Path:
    path = tmp_path / "replies.txt"
    path.write_text("\n---\n".join(replies) + "\n")
    return path


def test_mock_script_runs_measure_on_the_users_mask(tmp_path: Path, capsys) -> None:
    """MEASURE from the mock's script measures the user's mask, with the built-in names."""
    import nibabel as nib

    script = _script(tmp_path, "<MEASURE(right kidney)>", "The right kidney was measured.")
    code, out, err = run(
        [
            "chat", "--backend", "mock", "--mock-script", str(script),
            "--protocol", "medm3", "--experts", "measure",
            "--image", str(sample_ct()), "--mask", str(sample_ct_labels()),
            "--labels", "totalseg-ct", "-o", str(tmp_path / "out"), "--json",
            "How big is the right kidney?",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["answer"] == "The right kidney was measured."
    expert = next(s for s in doc["trace"] if s["step"] == "expert")
    (row,) = expert["result"]["measurements"]
    assert row["name"] == "kidney_right" and row["label"] == 2
    labels = np.asarray(nib.load(sample_ct_labels()).dataobj)
    assert row["voxels"] == int((labels == 2).sum())  # counted on the user's mask


def test_mask_names_are_detected_and_reported(tmp_path: Path, capsys) -> None:
    script = _script(tmp_path, "<MEASURE(liver)>", "ok")
    code, _, err = run(
        [
            "chat", "--backend", "mock", "--mock-script", str(script), "--protocol", "medm3",
            "--image", str(sample_ct()), "--mask", str(sample_ct_labels()),
            "-o", str(tmp_path / "o"), "Liver?",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "label names read from the file's header" in err


def test_a_scan_given_as_mask_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """The CLI checks the mask as the server does (one rule, medm3.imaging.user_mask)."""
    code, _, err = run(
        [
            "chat", "--backend", "mock", "--image", str(sample_ct()), "--mask", str(sample_ct()),
            "-o", str(tmp_path / "o"), "Liver?",
        ],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, "is not a label map")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--mock-script", "x.txt"], "--mock-script needs --backend mock"),
        (["--weights", "vista3d"], "--weights takes NAME=DIR"),
        (["--labels", "totalseg-ct"], "--labels names the labels of --mask"),
    ],
)
def test_option_errors(extra: list[str], needle: str, capsys) -> None:
    code, _, err = run(["chat", "--image", str(sample_ct()), *extra, "q"], capsys)
    assert_one_line_error(code, err, needle)


def test_local_weights_reach_the_expert(tmp_path: Path, capsys) -> None:
    """--weights vista3d=DIR: the expert loads from DIR; a folder without them is exit 3."""
    from medm3.demo import DEMO_VISTA3D_ROI
    from medm3.testing import write_vista3d_bundle

    empty = tmp_path / "w"
    empty.mkdir()
    script = _script(tmp_path, "<VISTA3D(liver)>", "done")
    argv = [
        "chat", "--backend", "mock", "--mock-script", str(script), "--protocol", "medm3",
        "--image", str(sample_ct()), "-o", str(tmp_path / "o"), "--json", "liver?",
    ]  # fmt: skip
    code, _, err = run([*argv, "--weights", f"vista3d={empty}"], capsys)
    assert_one_line_error(code, err, f"weights for expert 'vista3d' not found in {empty}", 3)
    bundle = write_vista3d_bundle(
        tmp_path / "bundle", roi=DEMO_VISTA3D_ROI, spacing=(3.0, 3.0, 3.0)
    )
    code, out, err = run([*argv, "--weights", f"VISTA3D={bundle}"], capsys)
    assert code == 0, err
    step = next(s for s in json.loads(out)["trace"] if s["step"] == "expert")
    info = step["result"]["info"]  # the bundle's own settings: it was loaded from DIR
    assert info["patch_size"] == list(DEMO_VISTA3D_ROI) and info["spacing_mm"] == [3.0] * 3


def test_piped_commands_are_not_sent_to_the_model(tmp_path: Path) -> None:
    script = _script(tmp_path, "first answer")
    proc = subprocess.run(
        [
            sys.executable, "-m", "medm3", "chat", "--backend", "mock",
            "--mock-script", str(script), "--image", str(sample_ct()),
            "-o", str(tmp_path / "o"),
        ],
        input="/help\nhello\n/files\n/nonsense\nsecond\n/exit\nnever asked\n",
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "first answer" in proc.stdout
    assert "(mock model) You asked: second" in proc.stdout  # the script ran out: echo
    assert "never asked" not in proc.stdout and "/help" not in proc.stdout
    assert "/files" in proc.stderr and "unknown command /nonsense" in proc.stderr
    assert "q1_view_image_axial_15.png" in proc.stderr  # /files listed the saved view


def test_cxr_progress_shows_probabilities_the_model_gets_yes_no(
    tmp_path: Path, cxr_png_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The progress lines show `Effusion: yes (p = 0.73)`; the model's feedback stays yes/no."""
    from medm3.data.reference_experts import FixedCXR
    from medm3.experts import registry
    from medm3.experts.cxr import LABELS

    probs = {k: 0.1 for k in LABELS} | {"Effusion": 0.73, "Mass": 0.61}
    monkeypatch.setitem(registry._instances, ("cxr", None, None), FixedCXR(probs))
    script = _script(tmp_path, "<CXR()>", "There is an effusion.")
    args = [
        "chat", "--backend", "mock", "--mock-script", str(script), "--protocol", "medm3",
        "--experts", "cxr", "--no-cache", "--modality", "CXR", "--image", str(cxr_png_path),
        "-o", str(tmp_path / "out"), "Any effusion?",
    ]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert out.strip().endswith("There is an effusion.")  # the streamed text, trigger first
    lines = [line.strip() for line in err.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("[expert <CXR()> done"))
    assert lines[start + 1 : start + 3] == ["Effusion: yes (p = 0.73)", "Mass: yes (p = 0.61)"]
    assert "Atelectasis: no (p = 0.10)" in lines

    code, out, _ = run([*args, "--json"], capsys)
    assert code == 0
    generates = [s for s in json.loads(out)["trace"] if s["step"] == "generate"]
    fed = generates[1]["input"][-1]["text"]
    assert "effusion: yes" in fed.lower() and "p =" not in fed and "0.73" not in fed


@pytest.mark.parametrize("via", ["MEDM3_DATA_DIR", "platform"])
def test_chat_without_output_writes_nothing_in_the_cwd(
    via: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -o, the view and results go to a run folder in the data dir, said on stderr."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if via == "platform":
        monkeypatch.delenv("MEDM3_DATA_DIR", raising=False)
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        root = tmp_path / "xdg" / "medm3" / "chat"
    else:
        monkeypatch.setenv("MEDM3_DATA_DIR", str(tmp_path / "data"))
        root = tmp_path / "data" / "chat"
    script = _script(tmp_path, "<MEASURE(liver)>", "Measured.")
    args = [
        "chat", "--backend", "mock", "--mock-script", str(script), "--protocol", "medm3",
        "--image", str(sample_ct()), "--mask", str(sample_ct_labels()), "Liver?",
    ]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert list(cwd.iterdir()) == []
    (folder,) = root.iterdir()
    assert folder.name.startswith("chat-")
    written = sorted(p.name for p in folder.rglob("*.png"))
    assert any(name.startswith("q1_view_image_axial_") for name in written), written
    assert f"files: {folder}" in err.splitlines()

    code, out, _ = run([*args, "--json"], capsys)  # a second run: its own folder, in the JSON
    assert code == 0 and list(cwd.iterdir()) == []
    second = Path(json.loads(out)["output_dir"])
    assert second.parent == root and second != folder and second.is_dir()


def test_chat_output_option_is_used_as_given(tmp_path: Path, capsys) -> None:
    script = _script(tmp_path, "Fine.")
    out_dir = tmp_path / "mine"
    code, out, _ = run(
        [
            "chat", "--backend", "mock", "--mock-script", str(script), "--image",
            str(sample_ct()), "-o", str(out_dir), "--json", "Anything?",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["output_dir"] == str(out_dir)
    assert any(p.name.startswith("q1_view_image") for p in out_dir.iterdir())

"""Batch expert runs with the local executor: inputs, table, failed rows, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.errors import InputError
from medm3.experts.batch import collect_inputs
from tests.cli.helpers import assert_one_line_error, run
from tests.conftest import shared_file


@pytest.fixture
def ct_list(tmp_path: Path) -> Path:
    """Two CT + label map rows (relative paths) and one row whose image is missing."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.nii.gz").symlink_to(shared_file("ct/ct_abdomen_3mm.nii.gz"))
    (tmp_path / "seg.nii.gz").symlink_to(shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz"))
    listing = tmp_path / "list.csv"
    rows = ["id,image,mask", "a,a.nii.gz,seg.nii.gz", "b,b.nii.gz,seg.nii.gz"]
    listing.write_text("\n".join([*rows, "c,missing.nii.gz,seg.nii.gz"]) + "\n")
    return listing


def _args(listing: Path, out: Path, *extra: str) -> list[str]:
    labels = shared_file("ct/totalseg_v2_labels.json")
    args = ["experts", "run", "measure", "--list", str(listing), "-o", str(out)]
    return [*args, "--labels", str(labels), "--arg", "liver", *extra]


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


def test_table_folders_failed_row_and_resume(
    ct_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(_args(ct_list, out), capsys)
    assert_one_line_error(code, err, "1 of 3 inputs failed", exit_code=1)
    assert "2 ok, 1 failed of 3 inputs (0 done before)" in stdout
    rows = _rows(out)
    assert [(r["id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok"), ("c", "failed")]
    assert "missing.nii.gz" in rows[2]["error"] and rows[2]["error"].count("\n") == 0
    liver = rows[0]["volumes_ml"]["liver"]
    assert rows[0]["structures"] == ["liver"] and 900 < liver < 1200
    assert rows[0]["text"].startswith("The measurements are:")
    # one overlay per measured structure, named after it
    assert sorted(p.name for p in (out / "a").iterdir()) == [
        "measure_axial_17_liver.png",
        "result.json",
    ]
    assert not (out / "c").exists() and not list(out.glob(".*partial"))
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:5] == ["input", "id", "status", "seconds", "error"]
    assert csv_lines[0].endswith("volume_ml:liver") and len(csv_lines) == 1 + 3 + 2  # 2 texts

    # a driver killed after the first input: one whole line and a torn one are left
    first = (out / "results.jsonl").read_text().splitlines()[0]
    (out / "results.jsonl").write_text(first + "\n" + '{"input": "b.nii')
    code, stdout, _ = run(_args(ct_list, out), capsys)
    assert code == 1 and "(1 done before)" in stdout
    assert _rows(out) == rows

    # the missing image appears: --retry-failed runs only that input again
    (tmp_path / "missing.nii.gz").symlink_to(shared_file("ct/ct_abdomen_3mm.nii.gz"))
    code, stdout, err = run(_args(ct_list, out), capsys)
    assert code == 1 and "(3 done before)" in stdout  # failures are recorded once
    code, stdout, err = run(_args(ct_list, out, "--retry-failed"), capsys)
    assert code == 0 and "3 ok, 0 failed of 3 inputs (2 done before)" in stdout, err
    assert _rows(out)[2]["volumes_ml"] == rows[0]["volumes_ml"]


def test_other_settings_are_refused(
    ct_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "batch.json").write_text(json.dumps({"expert": "measure", "arg": "spleen"}))
    code, _, err = run(_args(ct_list, out), capsys)
    assert_one_line_error(code, err, "holds a batch run with another arg ('spleen'")
    (out / "batch.json").unlink()
    (out / "x.txt").write_text("other")
    code, _, err = run(_args(ct_list, out), capsys)
    assert_one_line_error(code, err, "not an m3 batch run folder")


def test_collect_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("b.png", "a.nii.gz", "notes.txt", ".hidden.png"):
        (folder / name).write_bytes(b"")
    (folder / "series").mkdir()
    items = collect_inputs(["x/a.png"], ("image",), folder=folder)
    assert [(i.id, Path(i.input).name) for i in items] == [
        ("a", "a.png"),
        ("a-2", "a.nii.gz"),
        ("b", "b.png"),
        ("series", "series"),
    ]
    listing = tmp_path / "l.jsonl"
    listing.write_text(
        json.dumps({"t1c": "s1/t1c.nii", "t1": "s1/t1.nii", "t2": "s1/t2.nii", "flair": "f"}) + "\n"
    )
    (brats,) = collect_inputs([], ("t1c", "t1", "t2", "flair"), list_file=listing)
    assert brats.images["t1c"] == str(tmp_path / "s1" / "t1c.nii") and brats.id == "t1c"
    with pytest.raises(InputError, match="takes named inputs"):
        collect_inputs(["a.nii"], ("t1c", "t1", "t2", "flair"))
    with pytest.raises(InputError, match="no inputs"):
        collect_inputs([], ("image",), folder=tmp_path / "f" / "series")
    bad = tmp_path / "l.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match=r"must be a \.csv or \.jsonl"):
        collect_inputs([], ("image",), list_file=bad)


def test_several_images_of_a_one_input_expert_are_a_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(shared_file("cxr/nih_00000001_000.png"))
    code, _, err = run(["experts", "run", "cxr", image, image], capsys)
    assert_one_line_error(code, err, "a batch run needs -o/--output FOLDER")


def test_an_input_whose_worker_keeps_dying_is_one_failed_row(ct_list: Path, tmp_path: Path) -> None:
    from medm3.executors import LocalExecutor
    from medm3.experts.batch import BatchSettings, run_batch

    class LosesB(LocalExecutor):
        """Runs in process, but reports input "b" as lost (its worker died every time)."""

        def map(self, spec, payloads, *, on_lost=None):  # type: ignore[no-untyped-def]
            for index, item in enumerate(payloads):
                if item.id == "b":
                    yield index, on_lost(index, item, "ActorDiedError: killed")
                else:
                    yield index, spec.create()(item)

    items = collect_inputs([], ("image", "mask"), list_file=ct_list)[:2]
    labels = str(shared_file("ct/totalseg_v2_labels.json"))
    settings = BatchSettings(expert="measure", arg="liver", labels=labels)
    summary = run_batch(settings, items, tmp_path / "out", executor=LosesB())
    assert (summary.ok, summary.failed) == (1, 1)
    rows = _rows(tmp_path / "out")
    assert rows[1] == {
        "input": rows[1]["input"],
        "id": "b",
        "status": "failed",
        "error": "the worker died on every attempt (ActorDiedError: killed)",
    }
    assert not (tmp_path / "out" / "b").exists()


def test_stray_temp_files_of_killed_workers_are_removed(tmp_path: Path) -> None:
    from medm3.data.engine import sweep_temporaries
    from medm3.utils.atomic import atomic_path

    staging = tmp_path / "staging"
    (staging / "images" / "a").mkdir(parents=True)
    kept = ["train.json", ".build-state.json", "images/a/axial_2.png", "images/a/.x.png"]
    for name in kept:
        (staging / name).write_bytes(b"x")
    with pytest.raises(RuntimeError), atomic_path(staging / "images" / "a" / "ok.png") as tmp:
        stray = tmp.with_name(tmp.name.replace("ok.png.", "lost.png."))
        stray.write_bytes(b"half")  # what a worker killed inside atomic_path leaves
        raise RuntimeError
    (staging / "images" / "a" / ".b.png.link").symlink_to(staging / "train.json")
    assert sweep_temporaries(staging) == 2
    left = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    assert left == sorted(kept)

"""Batch expert runs, data builds and eval runs on a real local Ray cluster equal local runs.

One cluster for the module (``ray.init(num_cpus=2)``); every output is compared
with the local executor's on the same inputs. Timings (``seconds``, ``timings``,
``started``/``finished``) are the only fields allowed to differ.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import assert_one_line_error, run
from tests.conftest import shared_file
from tests.data.fixtures import read_tree

pytest.importorskip("ray", reason="Ray is not installed (pip install 'medm3[ray]')")
pytest.importorskip("torch")

TIMINGS = {"seconds", "timings", "started", "finished", "wall_seconds"}


def _strip(value: Any) -> Any:
    """``value`` without timing fields (at any depth)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _jsonl(path: Path) -> list[Any]:
    return [_strip(json.loads(line)) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- batch CXR
@pytest.fixture(scope="module")
def xrv_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.experts.conftest_brats_cxr import write_random_xrv_weights

    return write_random_xrv_weights(tmp_path_factory.mktemp("xrv"))


def test_batch_cxr_run_equals_local(
    ray_cluster: Any,
    xrv_weights: Path,
    tmp_path: Path,
    one_thread: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(shared_file("cxr/nih_00000001_000.png"), inputs / "a.png")
    shutil.copy(shared_file("cxr/cxr_monochrome1.dcm"), inputs / "b.dcm")
    (inputs / "c.png").write_bytes(b"not an image")
    common = ["experts", "run", "cxr", "--folder", str(inputs), "--weights", str(xrv_weights)]
    common += ["--no-cache", "--device", "cpu"]
    code, out, err = run([*common, "-o", str(tmp_path / "local")], capsys)
    assert code == 1 and "2 ok, 1 failed of 3 inputs" in out, err
    code, out, err = run(
        [*common, "-o", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2"], capsys
    )
    assert code == 1 and "2 ok, 1 failed of 3 inputs" in out, err
    local, remote = tmp_path / "local", tmp_path / "ray"
    rows = _jsonl(remote / "results.jsonl")
    assert rows == _jsonl(local / "results.jsonl")
    assert [(r["id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok"), ("c", "failed")]
    assert "c.png" in rows[2]["error"] and len(rows[0]["probabilities"]) == 18
    for item in ("a", "b"):
        assert sorted(p.name for p in (remote / item).iterdir()) == ["result.json"]
        ours = json.loads((remote / item / "result.json").read_text())
        assert _strip(ours) == _strip(json.loads((local / item / "result.json").read_text()))
    header = (local / "results.csv").read_text().splitlines()[0]
    assert (remote / "results.csv").read_text().splitlines()[0] == header


# ---------------------------------------------------------------- data build
@pytest.fixture(scope="module")
def ct_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """MSD layout of the shared CT with its reference labels, four times (four items)."""
    from medm3.data.expert_vista3d import vista3d_id

    ct = shared_file("ct/ct_abdomen_3mm.nii.gz")
    labels = shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz")
    names = json.loads(shared_file("ct/totalseg_v2_labels.json").read_text())
    root = tmp_path_factory.mktemp("ct")
    for sub in ("imagesTr", "labelsTr"):
        (root / "src" / sub).mkdir(parents=True)
    for name in ("ct_a", "ct_b", "ct_c", "ct_d"):
        (root / "src" / "imagesTr" / f"{name}.nii.gz").symlink_to(ct)
        (root / "src" / "labelsTr" / f"{name}.nii.gz").symlink_to(labels)
    label_map = root / "map.json"
    mapping = {k: (v if vista3d_id(v) is not None else None) for k, v in names.items()}
    label_map.write_text(json.dumps(mapping))
    return root / "src", label_map


def _executor(ray: Any, kill_after: int | None = None, stop_after: int | None = None) -> Any:
    """A 2-worker Ray executor that kills an actor / interrupts the driver after N results."""
    from medm3.executors.ray_executor import RayExecutor

    class Faulty(RayExecutor):
        def map(self, spec: Any, payloads: Any, **kwargs: Any) -> Iterator[Any]:
            for n, pair in enumerate(super().map(spec, payloads, **kwargs), 1):
                if n == kill_after and len(self.actors) > 1:
                    ray.kill(self.actors[0])
                if n == stop_after:
                    raise KeyboardInterrupt  # the driver dies here (shards so far are on disk)
                yield pair

    return Faulty(workers=2)


@pytest.fixture(scope="module")
def v3d_reference(
    ct_source: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Options and the local build's files (every byte) of the expert-vista3d build."""
    from medm3.data.engine import build_dataset

    source, label_map = ct_source
    options = {"label_map": str(label_map), "questions_per_volume": 3}
    out = tmp_path_factory.mktemp("v3d") / "local"
    build_dataset("expert-vista3d", source, out, options=options, shard_size=1)
    reference = read_tree(out)
    assert json.loads(reference["manifest.json"])["source_items"] == 4
    return options, reference


def test_vista3d_build_equals_local_even_when_an_actor_is_killed(
    ray_cluster: Any,
    ct_source: tuple[Path, Path],
    v3d_reference: tuple[dict[str, Any], dict[str, bytes]],
    tmp_path: Path,
    capsys: Any,
) -> None:
    from medm3.data.engine import build_dataset

    (source, label_map), (options, reference) = ct_source, v3d_reference
    killing = _executor(ray_cluster, kill_after=1)
    out = tmp_path / "killed"
    summary = build_dataset(
        "expert-vista3d", source, out, options=options, shard_size=1, executor=killing
    )
    assert killing.replaced >= 1 and summary.manifest["bad"]["count"] == 0
    assert read_tree(out) == reference  # every item once, same bytes
    args = ["data", "build", "expert-vista3d", "--source", str(source), "--shard-size", "1"]
    args += ["--label-map", str(label_map), "--questions-per-volume", "3"]
    code, _, err = run([*args, "-o", str(tmp_path / "cli"), "--executor", "ray"], capsys)
    assert code == 0, err
    assert read_tree(tmp_path / "cli") == reference


def test_vista3d_build_resumes_after_the_driver_died(
    ray_cluster: Any,
    ct_source: tuple[Path, Path],
    v3d_reference: tuple[dict[str, Any], dict[str, bytes]],
    tmp_path: Path,
) -> None:
    from medm3.data.engine import build_dataset, staging_path
    from medm3.executors.ray_executor import RayExecutor

    (source, _), (options, reference) = ct_source, v3d_reference
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build_dataset(
            "expert-vista3d",
            source,
            out,
            options=options,
            shard_size=1,
            executor=_executor(ray_cluster, stop_after=3),  # dies before writing the 3rd
        )
    assert not out.exists() and len(list((staging_path(out) / ".shards").iterdir())) == 2
    summary = build_dataset(
        "expert-vista3d",
        source,
        out,
        options=options,
        shard_size=1,
        executor=RayExecutor(workers=2),
    )
    assert summary.reused_items == 2
    assert read_tree(out) == reference


# ---------------------------------------------------------------- eval run
def test_eval_run_equals_local(ray_cluster: Any, tmp_path: Path, capsys: Any) -> None:
    from medm3.eval.runner import run_eval
    from medm3.testing.tiny_hf import build_tiny_llava
    from medm3.vlm.registry import load_backend
    from tests.eval import fixtures

    model = build_tiny_llava(tmp_path / "llava")
    data = fixtures.llava_vqa(tmp_path / "data")
    options = {"batch_size": 1, "max_new_tokens": 6}
    vlm = load_backend("hf", str(model), device="cpu")
    try:
        local = run_eval("vqa-rad", vlm, data, tmp_path / "local", **options)
    finally:
        vlm.close()
    args = ["eval", "run", "vqa-rad", "--backend", "hf", "--model", str(model), "--quiet"]
    args += ["--data", str(data), "--batch-size", "1", "--max-new-tokens", "6", "--device", "cpu"]
    code, _, err = run([*args, "-o", str(tmp_path / "ray"), "--executor", "ray"], capsys)
    assert code == 0, err
    ours = _jsonl(tmp_path / "ray" / "predictions.jsonl")
    assert ours == _jsonl(local.predictions_path)
    assert [r["question_id"] for r in ours] == ["r1", "r2", "r6"]  # closed questions, in order
    log = json.loads((tmp_path / "ray" / "run.json").read_text())
    reference = json.loads(local.log_path.read_text())
    assert log["metrics"] == reference["metrics"] and log["samples"] == reference["samples"]
    assert log["model"] == reference["model"]


# ---------------------------------------------------------------- bad input
def test_more_gpus_per_worker_than_the_cluster_has(
    ray_cluster: Any, xrv_weights: Path, tmp_path: Path, capsys: Any
) -> None:
    image = shared_file("cxr/nih_00000001_000.png")
    args = ["experts", "run", "cxr", str(image), "--weights", str(xrv_weights)]
    args += ["-o", str(tmp_path / "out"), "--executor", "ray", "--gpus-per-worker", "4"]
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "--gpus-per-worker 4: no node of the Ray cluster has")
    assert not (tmp_path / "out").exists()

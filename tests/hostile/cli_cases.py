"""The CLI half of the hostile-input corpus: cases, and how to run and judge one.

A :class:`CliCase` is an ``m3`` command line with placeholders, the inputs it
needs (names of :mod:`tests.hostile.generators_cli` generators or of the
special inputs below) and its expected outcome. :data:`CASES` lists them all;
:func:`run_case` runs one (in-process through :func:`medm3.cli.main.main`,
or as a subprocess when ``subprocess=True``, for bombs whose peak memory must
be measured on a process of its own) and :func:`problems` says what is wrong
with the outcome. ``tests/hostile/test_cli_corpus.py`` runs them under pytest;
``benchmarks/bench_hostile.py`` imports the same list.

Every case asserts: the exit code; on failure exactly one stderr line, starting
``m3: error:`` (holding ``needle`` and, for image inputs, the file name); no
traceback; nothing written outside the case's output folder (and nothing in
it after a failure); the inputs unchanged; peak memory within
:data:`MEMORY_BUDGET_MB` above the baseline (``m3 info`` of a small volume).

Placeholders in ``argv``: ``{in:NAME}`` an input's path, ``{out}`` the case's
output folder (created empty), ``{ro}`` a location no one may write to
(``/sys`` refuses new files even to root).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.hostile import generators_cli as gen

#: Peak memory allowed above the baseline run, in MB.
MEMORY_BUDGET_MB = 300.0
#: A folder that cannot be written, even by root.
READ_ONLY = "/sys/medm3-hostile"
#: Wall-clock limit of one subprocess case, in seconds.
TIMEOUT_S = 180


@dataclass(frozen=True)
class CliCase:
    """One hostile command line and what it must do.

    Attributes:
        name: Unique id (``command/input``).
        argv: ``m3`` arguments with placeholders (see the module docstring).
        code: Expected exit status (0: success).
        needle: Text the single error line must hold (failures), or that
            stdout must hold (successes); None: not checked.
        subprocess: Run as a child process (memory measured with ``wait4``).
        names_input: The error line must name the ``{in:...}`` file.
        env: Extra environment variables.
        check: Extra post-condition ``check(case_dir) -> problem or None``.
        expect_output: On success, the output folder must not be empty.
    """

    name: str
    argv: tuple[str, ...]
    code: int = 2
    needle: str | None = None
    subprocess: bool = False
    names_input: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Path], str | None] | None = None
    expect_output: bool = False

    @property
    def inputs(self) -> list[str]:
        """Names of the inputs the case needs."""
        found = []
        for arg in self.argv:
            start = 0
            while (i := arg.find("{in:", start)) >= 0:
                j = arg.index("}", i)
                found.append(arg[i + 4 : j])
                start = j
        return found


@dataclass
class Outcome:
    """What one run did."""

    code: int
    stdout: str
    stderr: str
    peak_mb: float
    seconds: float
    left_behind: list[str] = field(default_factory=list)
    out_files: list[str] = field(default_factory=list)
    input_paths: list[Path] = field(default_factory=list)
    check_problem: str | None = None


# ------------------------------------------------------------------ special inputs
def _vista3d_bundle(folder: Path, network_def: object) -> Path:
    """A VISTA3D-layout bundle with an empty (valid) state dict and ``network_def``."""
    import torch

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    torch.save({"weight": torch.zeros(1)}, folder / "models" / "model.pt")
    config = {"input_channels": 1, "network_def": network_def}
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    return folder


def _marker(folder: Path) -> Path:
    return folder / "PWNED"


def bundle_evil_expression(folder: Path) -> Path:
    """``network_def`` = ``$__import__('os').system('touch PWNED')`` (the issue's attack)."""
    code = f"$__import__('os').system('touch {_marker(folder)}')"
    return _vista3d_bundle(folder / "evil_expr_bundle", code)


def bundle_evil_argument(folder: Path) -> Path:
    """A known constructor whose argument is an expression running code."""
    net = {
        "_target_": "monai.networks.nets.vista3d132",
        "in_channels": f"$__import__('os').system('touch {_marker(folder)}')",
    }
    return _vista3d_bundle(folder / "evil_arg_bundle", net)


def bundle_evil_reference(folder: Path) -> Path:
    """A known constructor whose ``@reference`` points at code."""
    bundle = _vista3d_bundle(
        folder / "evil_ref_bundle",
        {"_target_": "monai.networks.nets.vista3d132", "in_channels": "@channels"},
    )
    cfg = bundle / "configs" / "inference.json"
    data = json.loads(cfg.read_text())
    data["channels"] = f"$__import__('os').system('touch {_marker(folder)}') + 1"
    cfg.write_text(json.dumps(data))
    return bundle


def bundle_evil_target(folder: Path) -> Path:
    """``_target_`` outside monai.networks.nets."""
    net = {"_target_": "os.system", "command": f"touch {_marker(folder)}"}
    return _vista3d_bundle(folder / "evil_target_bundle", net)


def brats_bundle_evil(folder: Path) -> Path:
    """A BraTS-layout bundle whose SegResNet argument runs code."""
    bundle = folder / "evil_brats_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"not read: refused first")
    net = {
        "_target_": "SegResNet",
        "in_channels": f"$__import__('os').system('touch {_marker(folder)}') + 4",
        "out_channels": 3,
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net}))
    return bundle


def vqa_rad_source(folder: Path) -> Path:
    """A VQA-RAD release with one good image and five hostile ones.

    Bad: a link to ``/etc/passwd``, a corrupt JPEG, a truncated PNG, a PNG
    decompression bomb, a link to a file outside the dataset.
    """
    root = folder / "vqa_rad_source"
    images = root / "VQA_RAD Image Folder"
    images.mkdir(parents=True)
    good = gen.png_ok(folder)
    (images / "good.png").write_bytes(good.read_bytes())
    (images / "passwd.jpg").symlink_to("/etc/passwd")
    (images / "corrupt.jpg").write_bytes(gen.jpeg_corrupt(folder).read_bytes())
    (images / "truncated.png").write_bytes(gen.png_truncated(folder).read_bytes())
    (images / "bomb.png").write_bytes(gen.png_bomb(folder).read_bytes())
    outside = folder / "outside_secret.png"
    outside.write_bytes(good.read_bytes())
    (images / "outside.png").symlink_to(outside)
    names = ["good.png", "passwd.jpg", "corrupt.jpg", "truncated.png", "bomb.png", "outside.png"]
    records = [
        {
            "qid": i,
            "image_name": name,
            "question": "Is this normal?",
            "answer": "yes",
            "answer_type": "CLOSED",
            "phrase_type": "freeform",
        }
        for i, name in enumerate(names)
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    return root


def eval_duplicates(folder: Path) -> Path:
    """Ground truth (2 questions) and predictions naming question 1 twice."""
    root = folder / "eval_dup"
    root.mkdir()
    gt = [
        {
            "id": i,
            "answer_type": "CLOSED",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "no"}],
        }
        for i in (1, 2)
    ]
    (root / "gt.json").write_text(json.dumps(gt))
    preds = [{"question_id": q, "text": t} for q, t in ((1, "no"), (2, "yes"), (1, "yes"))]
    (root / "dup.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    (root / "ok.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds[:2]))
    return root


SPECIAL: dict[str, Callable[[Path], Path]] = {
    "bundle_evil_expression": bundle_evil_expression,
    "bundle_evil_argument": bundle_evil_argument,
    "bundle_evil_reference": bundle_evil_reference,
    "bundle_evil_target": bundle_evil_target,
    "brats_bundle_evil": brats_bundle_evil,
    "vqa_rad_source": vqa_rad_source,
    "eval_duplicates": eval_duplicates,
}


def make_input(name: str, folder: Path) -> Path:
    """Build a generator or special input once per folder and return its path."""
    if name in SPECIAL:
        done = folder / f".made-{name}"
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            done.write_text(str(SPECIAL[name](folder)))
        return Path(done.read_text())
    return gen.make(name, folder)


# ------------------------------------------------------------------ the case list
#: Image inputs -> (exit code, needle) when a command reads them as images.
IMAGE_INPUTS: dict[str, tuple[int, str | None]] = {
    "nifti_ok": (0, None),
    "dicom_ok": (0, None),
    "png_ok": (0, None),
    "nifti_all_nan": (0, None),
    "nifti_some_nan": (0, None),
    "nifti_singular_affine": (2, "singular"),
    "nifti_collinear_affine": (2, "singular"),
    "nifti_nonfinite_affine": (2, "not finite"),
    "nifti_zero_dim": (2, "zero-length"),
    "nifti_negative_dim": (2, "negative"),
    "nifti_complex": (2, "complex"),
    "nifti_5d": (2, "5D image"),
    "nifti_5d_unit_time": (2, "5D image"),
    "nifti_4d": (2, "4D image"),
    "nifti_declares_huge": (2, "truncated"),
    "nifti_declares_huge_gz": (2, "truncated"),
    "nifti_declares_float64_huge": (2, "truncated"),
    "nifti_gzip_bomb": (2, "decompression bomb"),
    "nifti_truncated": (2, "truncated"),
    "nifti_truncated_gz": (2, "truncated"),
    "nifti_header_only": (2, "truncated"),
    "nifti_garbage": (2, "no NIfTI header"),
    "nifti_bad_datatype": (2, "not a valid NIfTI"),
    "gzip_garbage_nii": (2, "no NIfTI header"),
    "dicom_truncated": (2, "truncated"),
    "dicom_truncated_header": (2, "truncated"),
    "dicom_preamble_only": (2, "truncated"),
    "dicom_no_pixels": (2, "no pixel data"),
    "dicom_declares_huge_single": (2, "decompression bomb"),
    "dicom_declares_huge": (2, "multi-frame"),
    "dicom_huge_element": (2, "truncated"),
    "dicom_zero_rows": (2, "zero-length"),
    "dicom_zip_bomb": (2, "zip bomb"),
    "dicom_zip_lying_size": (2, "corrupt archive member"),
    "zip_many_members": (2, "members"),
    "zip_traversal": (2, "unsafe path"),
    "zip_absolute": (2, "unsafe path"),
    "zip_truncated": (2, "not a valid zip"),
    "zip_empty": (2, "empty"),
    "zip_not_dicom": (2, "no DICOM image files"),
    "zip_truncated_dicom": (2, "truncated"),
    "dicom_folder_truncated": (2, None),
    "png_bomb": (2, "too large"),
    "png_truncated": (2, "truncated"),
    "jpeg_corrupt": (2, None),
    "tiff_bomb": (2, "too large"),
    "nrrd_declares_huge": (2, "decompression bomb"),
    "mha_declares_huge": (2, "decompression bomb"),
    "nrrd_truncated": (2, "truncated"),
    "empty_file": (2, "empty"),
    "text_as_dcm": (2, None),
    "png_named_nii": (2, "content is a PNG"),
    "symlink_passwd": (2, None),
    "symlink_dangling": (2, "no such file"),
    "symlink_loop": (2, "no such file"),
    "fifo": (2, "not a regular file"),
    "directory_empty": (2, "empty"),
    "missing": (2, "no such file"),
}

#: Environment for cases reading an input (limits scaled down to keep inputs small).
INPUT_ENV: dict[str, dict[str, str]] = {"zip_many_members": {"MEDM3_MAX_ZIP_MEMBERS": "1000"}}

#: Inputs whose error names another file (a member of an archive).
UNNAMED = frozenset({"zip_truncated_dicom"})

#: Inputs whose reading must be measured in a process of its own.
BOMBS = frozenset(
    {
        "nifti_declares_huge",
        "nifti_declares_huge_gz",
        "nifti_declares_float64_huge",
        "nifti_gzip_bomb",
        "dicom_declares_huge_single",
        "dicom_zip_bomb",
        "dicom_huge_element",
        "png_bomb",
        "tiff_bomb",
        "nrrd_declares_huge",
        "mha_declares_huge",
    }
)

#: Inputs -> (exit code, needle) for `m3 deid IN OUT`.
DEID_INPUTS: dict[str, tuple[int, str | None]] = {
    "dicom_ok": (0, "de-identified 1 file"),
    "dicom_no_pixels": (0, "de-identified 1 file"),
    "dicom_zero_rows": (0, "de-identified 1 file"),
    "dicom_truncated": (2, "truncated"),
    "dicom_truncated_header": (2, "truncated"),
    "dicom_preamble_only": (2, "truncated"),
    "dicom_huge_element": (2, "truncated"),
    "dicom_zip_bomb": (2, "zip bomb"),
    "dicom_zip_lying_size": (2, "Bad CRC"),
    "zip_many_members": (2, "members"),
    "zip_traversal": (2, "unsafe path"),
    "zip_absolute": (2, "unsafe path"),
    "zip_truncated": (2, "not a DICOM file"),
    "zip_empty": (2, "no DICOM file found"),
    "zip_not_dicom": (2, "no DICOM file found"),
    "zip_truncated_dicom": (2, "truncated"),
    "dicom_folder_truncated": (2, "truncated"),
    "directory_empty": (2, "no DICOM file found"),
    "missing": (2, "no such file"),
    "symlink_dangling": (2, "no such file"),
    "symlink_loop": (2, "no such file"),
    "fifo": (2, "not a DICOM file"),
    "symlink_passwd": (2, "not a DICOM file"),
    "nifti_ok": (2, "not a DICOM file"),
    "nifti_gzip_bomb": (2, "not a DICOM file"),
    "png_ok": (2, "not a DICOM file"),
    "text_as_dcm": (2, "not a DICOM file"),
    "empty_file": (2, "not a DICOM file"),
}

_CHAT = ("chat", "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1")


def _vista3d(weights: str, *extra: str) -> tuple[str, ...]:
    """``m3 experts run vista3d`` on the good NIfTI (liver), ``extra`` then ``--weights``."""
    return (
        "experts",
        "run",
        "vista3d",
        "{in:nifti_ok}",
        "--arg",
        "liver",
        *extra,
        "--weights",
        weights,
    )


#: ``m3 experts run brats`` on four copies of the good NIfTI, the weights to follow.
_BRATS = (
    "experts", "run", "brats",
    *(f"{seq}={{in:nifti_ok}}" for seq in ("t1ce", "t1", "t2", "flair")),
    "--modality", "MR", "--weights",
)  # fmt: skip


def _vqa_build(out: str, *extra: str) -> tuple[str, ...]:
    """``m3 data build vqa-rad`` of the hostile VQA-RAD source into ``out``."""
    return ("data", "build", "vqa-rad", "--source", "{in:vqa_rad_source}", "-o", out, *extra)


def _image_cases() -> list[CliCase]:
    cases = []
    nan_text = {"nifti_all_nan": "no finite values", "nifti_some_nan": "NaN/inf ignored"}
    for name, (code, needle) in IMAGE_INPUTS.items():
        sub, ok, named = name in BOMBS, code == 0, name not in UNNAMED
        src = f"{{in:{name}}}"
        cases += [
            CliCase(f"info/{name}", ("info", src), code, nan_text.get(name, needle), sub, named),
            CliCase(f"info-json/{name}", ("info", "--json", src), code, needle, False, named),
            CliCase(
                f"render/{name}",
                ("render", src, "-o", "{out}/slice.png"),
                code,
                "wrote" if ok else needle,
                sub,
                named,
                expect_output=ok,
            ),
        ]
        if ok:
            continue
        overlay = ("render", "{in:nifti_ok}", "--overlay", src, "-o", "{out}/s.png")
        expert = ("experts", "run", "vista3d", src, "--arg", "liver")
        cases += [
            CliCase(f"render-overlay/{name}", overlay, code, needle, False, named),
            CliCase(
                f"experts-run/{name}",
                (*expert, "--weights", "{in:bundle_evil_expression}"),
                code,
                needle,
                False,
                named,
                check=_not_pwned,
            ),
            CliCase(f"chat/{name}", (*_CHAT, "--image", src, "hi"), code, needle, False, named),
            CliCase(
                f"experts-measure/{name}",
                ("experts", "run", "measure", src, "--mask", "{in:nifti_ok}", "--arg", "1"),
                code,
                needle,
                False,
                named,
            ),
        ]
    return cases


def _deid_cases() -> list[CliCase]:
    return [
        CliCase(
            f"deid/{name}",
            ("deid", f"{{in:{name}}}", "{out}/deid"),
            code,
            needle,
            subprocess=name in BOMBS,
            names_input=code != 0 and name not in ("dicom_folder_truncated", "zip_truncated_dicom"),
            expect_output=code == 0,
        )
        for name, (code, needle) in DEID_INPUTS.items()
    ] + [
        CliCase(
            f"deid-zip-out/{name}",
            ("deid", f"{{in:{name}}}", "{out}/deid.zip"),
            code,
            needle,
            subprocess=name in BOMBS,
            names_input=False,
        )
        for name, (code, needle) in DEID_INPUTS.items()
        if name.startswith(("zip", "dicom_zip", "dicom_folder"))
    ]


def _not_pwned(case_dir: Path) -> str | None:
    for folder in (case_dir.parent.parent / "inputs", case_dir):
        if _marker(folder).exists():
            return f"bundle code ran: {_marker(folder)} exists"
    return None


def _pwned(case_dir: Path) -> str | None:
    marker = _marker(case_dir.parent.parent / "inputs")
    if not marker.exists():
        return "with --trust-bundle-code the bundle's code should have run"
    marker.unlink()
    return None


def _build_checks(case_dir: Path) -> str | None:
    out = case_dir / "out" / "ds"
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["bad"]["count"] != 5 or manifest["total_rows"] != 1:
        return f"expected 1 row and 5 bad rows, got {manifest['total_rows']} / {manifest['bad']}"
    images = sorted(p.name for p in (out / "images").iterdir())
    if images != ["good.png"]:
        return f"only the good image may be copied, found {images}"
    return None


_TRUST_ENV = {"MEDM3_TRUST_BUNDLE_CODE": "1"}


def _special_cases() -> list[CliCase]:
    evil = [
        "bundle_evil_expression",
        "bundle_evil_argument",
        "bundle_evil_reference",
        "bundle_evil_target",
    ]
    cases = [
        CliCase(
            f"bundle/{name}",
            _vista3d(f"{{in:{name}}}"),
            2,
            "--trust-bundle-code",
            names_input=False,
            check=_not_pwned,
        )
        for name in evil
    ]
    cases.append(
        CliCase(
            "bundle/trusted-runs-code",
            (*_vista3d("{in:bundle_evil_expression}"), "--trust-bundle-code"),
            2,  # unusable weights (issue 12 taxonomy), naming configs/inference.json
            "not a torch.nn.Module",
            names_input=False,
            check=_pwned,
        )
    )
    # BraTS bundles: untrusted code refused; trusted by the environment, its code runs.
    brats = [
        ("brats-evil", 2, "--trust-bundle-code", {}, _not_pwned),
        # an unreadable checkpoint is unusable weights (issue 12 taxonomy)
        ("env-trust-brats", 2, "cannot read the BraTS checkpoint", _TRUST_ENV, _pwned),
    ]
    cases += [
        CliCase(
            f"bundle/{name}",
            (*_BRATS, "{in:brats_bundle_evil}"),
            code,
            needle,
            names_input=False,
            env=env,
            check=check,
        )
        for name, code, needle, env, check in brats
    ]
    series = [
        CliCase(
            "series/99-single-nifti", ("info", "{in:nifti_ok}", "--series", "99"), 2, "one series"
        ),
        CliCase(
            "series/uid-single-dicom",
            ("info", "{in:dicom_ok}", "--series", "1.2.3"),
            2,
            "one series",
        ),
        CliCase("series/0-single-file", ("info", "{in:dicom_ok}", "--series", "0"), 0, "CT"),
        CliCase(
            "series/render-99",
            ("render", "{in:png_ok}", "-o", "{out}/x.png"),
            0,
            "wrote",
            expect_output=True,
        ),
    ]
    readonly = [
        CliCase(
            "readonly/render",
            ("render", "{in:nifti_ok}", "-o", f"{READ_ONLY}/x.png"),
            2,
            "cannot write",
            names_input=False,
        ),
        CliCase(
            "readonly/render-root",
            ("render", "{in:nifti_ok}", "-o", "/sys/x.png"),
            2,
            "cannot write",
            names_input=False,
        ),
        CliCase(
            "readonly/experts-run",
            _vista3d("{in:bundle_evil_expression}", "-o", READ_ONLY),
            2,
            "cannot write",
            names_input=False,
            check=_not_pwned,
        ),
        CliCase(
            "readonly/data-build",
            _vqa_build(f"{READ_ONLY}/ds"),
            2,
            "cannot write",
            names_input=False,
        ),
        CliCase(
            "readonly/deid",
            ("deid", "{in:dicom_ok}", f"{READ_ONLY}/x.dcm"),
            2,
            "cannot write",
            names_input=False,
        ),
        CliCase(
            "readonly/deid-folder",
            ("deid", "{in:dicom_folder_truncated}", f"{READ_ONLY}/d"),
            2,
            None,
            names_input=False,
        ),
        CliCase(
            "readonly/eval-report-chart",
            ("eval", "report", "{in:eval_duplicates}", "-o", f"{READ_ONLY}/c.png"),
            2,
            None,
            names_input=False,
        ),
    ]
    text = [
        CliCase(
            "utf8/chat-prompt",
            (*_CHAT, "--image", "{in:nifti_ok}", "hi \udcff there"),
            2,
            "UTF-8",
            names_input=False,
        ),
        CliCase("utf8/chat-prompt-only", (*_CHAT, "caf\udce9"), 2, "UTF-8", names_input=False),
        CliCase(
            "utf8/info-path",
            ("info", "/nonexistent/\udcff.nii"),
            2,
            "no such file",
            names_input=False,
        ),
        CliCase(
            "utf8/render-output",
            ("render", "{in:png_ok}", "-o", "{out}/\udcff.png"),
            0,
            None,
            names_input=False,
            expect_output=True,
        ),
        CliCase(
            "utf8/chat-ok-prompt-no-server",
            (*_CHAT, "--image", "{in:png_ok}", "héllo"),
            1,
            "cannot connect",
            names_input=False,
        ),
    ]
    # A VQA-RAD source with 5 hostile images among 6 rows: counted bad, or too many.
    lenient = ("--max-bad-fraction", "1")
    builds = [
        ("hostile-images-counted-bad", lenient, 0, "5 bad"),
        ("hostile-images-too-many-bad", (), 2, "malformed"),
        ("symlink-images", (*lenient, "--image-mode", "symlink"), 0, "5 bad"),
    ]
    data = [
        CliCase(
            f"data/{name}",
            _vqa_build("{out}/ds", *extra, "--no-progress"),
            code,
            needle,
            names_input=False,
            check=_build_checks if code == 0 else None,
            expect_output=code == 0,
        )
        for name, extra, code, needle in builds
    ]
    evals = [
        CliCase(
            f"eval/{name}",
            (
                "eval",
                "score",
                "--protocol",
                "llava-med",
                "--answers",
                "{in:eval_duplicates}/gt.json",
                "--predictions",
                f"{{in:eval_duplicates}}/{predictions}",
            ),
            code,
            needle,
            names_input=False,
        )
        for name, predictions, code, needle in [
            ("duplicate-prediction-ids", "dup.jsonl", 2, "appears twice"),
            ("unique-prediction-ids", "ok.jsonl", 0, "protocol llava-med"),
        ]
    ]
    limits = [
        CliCase(
            "limits/env-bytes-small",
            ("info", "{in:nifti_ok}"),
            2,
            "MEDM3_MAX_IMAGE_BYTES",
            env={"MEDM3_MAX_IMAGE_BYTES": "1000"},
        ),
        CliCase(
            "limits/env-gzip-ratio",
            ("info", "{in:nifti_gzip_bomb}"),
            2,
            "MEDM3_MAX_GZIP_RATIO",
            subprocess=True,
            env={"MEDM3_MAX_GZIP_RATIO": "100"},
        ),
        CliCase(
            "limits/env-invalid",
            ("info", "{in:nifti_ok}"),
            2,
            "MEDM3_MAX_IMAGE_BYTES",
            names_input=False,
            env={"MEDM3_MAX_IMAGE_BYTES": "lots"},
        ),
        CliCase(
            "limits/deid-zip-ratio-env",
            ("deid", "{in:dicom_zip_lying_size}", "{out}/d"),
            2,
            None,
            names_input=False,
            env={"MEDM3_MAX_ZIP_MEMBERS": "0"},
        ),
    ]
    return cases + series + readonly + text + data + evals + limits


def all_cases() -> list[CliCase]:
    """Every CLI case of the corpus (names unique)."""
    cases = _image_cases() + _deid_cases() + _special_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


#: The corpus (imported by benchmarks/bench_hostile.py).
CASES: list[CliCase] = all_cases()


# ------------------------------------------------------------------ running
def _fill(text: str, inputs: Path, out: Path) -> str:
    for name in _names_in(text):
        text = text.replace(f"{{in:{name}}}", str(make_input(name, inputs)))
    return text.replace("{out}", str(out)).replace("{ro}", READ_ONLY)


def _names_in(text: str) -> list[str]:
    return CliCase("x", (text,)).inputs


def _snapshot(folder: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            with contextlib.suppress(OSError):
                found[str(path.relative_to(folder))] = path.lstat().st_size
    return found


def run_case(case: CliCase, inputs: Path, work: Path) -> Outcome:
    """Run ``case`` with inputs built under ``inputs`` and its own folder under ``work``.

    Args:
        case: The case.
        inputs: Shared folder of generated inputs (built on first use).
        work: Parent of the per-case folder (``work/<case name>``).

    Returns:
        The outcome, ``left_behind`` listing files written outside the output
        folder or changes to the inputs.
    """
    safe = case.name.replace("/", "__")
    case_dir = work / safe
    out, tmp = case_dir / "out", case_dir / "tmp"
    out.mkdir(parents=True)
    tmp.mkdir()
    argv = [_fill(a, inputs, out) for a in case.argv]
    env = {k: v for name in case.inputs for k, v in INPUT_ENV.get(name, {}).items()}
    env.update({k: _fill(v, inputs, out) for k, v in case.env.items()})
    before = _snapshot(inputs)
    if case.subprocess:
        outcome = _run_subprocess(argv, env, case_dir, tmp)
    else:
        outcome = _run_in_process(argv, env, case_dir, tmp)
    after = _snapshot(inputs)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    changed = [c for c in changed if not c.startswith(".made-") and c != "PWNED"]
    stray = [p for p in _snapshot(case_dir) if not p.startswith(("out/", "_logs/", "tmp/"))]
    stray += [f"tmp/{p}" for p in _snapshot(tmp)]
    outcome.left_behind = [f"inputs/{c}" for c in changed] + stray
    outcome.out_files = sorted(_snapshot(out))
    outcome.input_paths = [make_input(n, inputs) for n in case.inputs]
    if case.check is not None:
        try:
            outcome.check_problem = case.check(case_dir)
        except Exception as exc:  # a failed post-condition, reported like the others
            outcome.check_problem = f"check failed: {type(exc).__name__}: {exc}"
    return outcome


def _rss_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next case's peak can be read (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _run_in_process(argv: list[str], env: dict[str, str], case_dir: Path, tmp: Path) -> Outcome:
    from medm3.cli.main import main

    saved_env = dict(os.environ)
    os.environ.update(env)
    os.environ["TMPDIR"], os.environ["MEDM3_NO_PROGRESS"] = str(tmp), "1"
    old_cwd, old_tempdir = os.getcwd(), tempfile.tempdir
    tempfile.tempdir = str(tmp)
    os.chdir(case_dir)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    use_rss = _reset_peak_rss()
    rss_before = _rss_kib("VmRSS") or 0
    if not use_rss:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # a bug: keep the traceback for the report
                traceback.print_exc(file=stderr)
                code = -1
    finally:
        seconds = time.perf_counter() - start
        if use_rss:
            peak_mb = max(0, (_rss_kib("VmHWM") or 0) - rss_before) / 1024
        else:
            peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        os.chdir(old_cwd)
        tempfile.tempdir = old_tempdir
        os.environ.clear()
        os.environ.update(saved_env)
    return Outcome(code, stdout.getvalue(), stderr.getvalue(), peak_mb, seconds)


#: Runs `m3` and, at exit, writes the process's own peak RSS (VmHWM, KiB) to a file.
#: (``wait4``'s ``ru_maxrss`` would count the pages of the forking test process.)
_PEAK_WRAPPER = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as fh:
        kib = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
    with open(os.environ["M3_PEAK_FILE"], "w") as out:
        out.write(str(kib))
atexit.register(_peak)
from medm3.cli.main import main
main(sys.argv[1:])
"""


def _run_subprocess(argv: list[str], env: dict[str, str], case_dir: Path, tmp: Path) -> Outcome:
    logs = case_dir / "_logs"
    logs.mkdir()
    peak_file = logs / "peak_kib"
    full_env = {**os.environ, **env, "TMPDIR": str(tmp), "MEDM3_NO_PROGRESS": "1"}
    full_env.update(HF_HUB_OFFLINE="1", M3_PEAK_FILE=str(peak_file))
    src = str(Path(__file__).resolve().parents[2] / "src")
    full_env["PYTHONPATH"] = os.pathsep.join([src, full_env.get("PYTHONPATH", "")]).strip(
        os.pathsep
    )
    start = time.perf_counter()
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PEAK_WRAPPER, *argv],
            cwd=case_dir,
            env=full_env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - start
    try:
        peak_mb = int(peak_file.read_text()) / 1024
    except (OSError, ValueError):
        peak_mb = float("inf")  # killed before exiting normally
    return Outcome(
        proc.returncode,
        (logs / "stdout").read_text(errors="replace"),
        (logs / "stderr").read_text(errors="replace"),
        peak_mb,
        seconds,
    )


def warm_up() -> None:
    """Import what the in-process cases use, so import memory is not charged to a case."""
    import monai.networks.nets  # noqa: F401
    import torch  # noqa: F401

    import medm3.experts.brats
    import medm3.experts.vista3d  # noqa: F401
    from medm3.cli import chat, data, deid, eval, experts, info, render  # noqa: F401
    from medm3.vlm.registry import BACKENDS

    BACKENDS.get("openai")


def baseline_mb(inputs: Path, work: Path) -> tuple[float, float]:
    """Peak memory of a harmless run: (subprocess RSS MB, in-process traced MB)."""
    case = CliCase("baseline/info", ("info", "{in:nifti_ok}"), 0)
    sub = run_case(CliCase("baseline/sub", case.argv, 0, subprocess=True), inputs, work)
    inproc = run_case(case, inputs, work)
    return sub.peak_mb, inproc.peak_mb


def problems(case: CliCase, outcome: Outcome, baseline: tuple[float, float]) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (empty list: the case passes).

    Args:
        case: The case.
        outcome: What :func:`run_case` returned.
        baseline: Output of :func:`baseline_mb`.

    Returns:
        One phrase per failed assertion.
    """
    found = []
    err_lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.code != case.code:
        found.append(f"exit code {outcome.code}, expected {case.code}")
    if "Traceback" in outcome.stderr or "Traceback" in outcome.stdout:
        found.append("traceback printed")
    if case.code != 0:
        errors = [line for line in err_lines if line.startswith("m3: error:")]
        if len(err_lines) != 1 or len(errors) != 1:
            found.append(f"expected exactly one 'm3: error:' line, got {len(err_lines)} line(s)")
        line = errors[0] if errors else ""
        if case.needle is not None and case.needle not in line:
            found.append(f"error line lacks {case.needle!r}")
        hostile = case.name.rsplit("/", 1)[-1]
        if case.names_input and hostile in case.inputs:
            name = outcome.input_paths[case.inputs.index(hostile)].name
            if name not in line:
                found.append(f"error line does not name the input ({name})")
    else:
        if case.needle is not None and case.needle not in outcome.stdout:
            found.append(f"stdout lacks {case.needle!r}")
        if err_lines and any(line.startswith("m3: error") for line in err_lines):
            found.append("error line on success")
    if outcome.check_problem:
        found.append(outcome.check_problem)
    if outcome.left_behind:
        found.append(f"files left outside the output folder: {outcome.left_behind[:5]}")
    if case.code != 0 and outcome.out_files:
        found.append(f"partial output left after a failure: {outcome.out_files[:5]}")
    if case.code == 0 and case.expect_output and not outcome.out_files:
        found.append("no output written")
    sub_base, _ = baseline
    base = sub_base if case.subprocess else 0.0  # in-process peaks are growth already
    if outcome.peak_mb - base > MEMORY_BUDGET_MB:
        found.append(
            f"peak memory {outcome.peak_mb:.0f} MB, {outcome.peak_mb - base:.0f} MB over baseline"
        )
    return found

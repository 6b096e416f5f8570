"""Regenerate reference_conversations.json by RUNNING the reference code (not part of the tests).

Usage (outside the repository, with the two public repositories extracted)::

    REF=/tmp/m3ref/ref     # git archive of Project-MONAI/VLM-Radiology-Agent-Framework
    VILA=/tmp/m3ref/vila15 # llava/data/dataset.py + llava/constants.py of NVlabs/VILA
    python tests/agent/golden/make_golden.py $REF $VILA OUT.json

What runs, unchanged, from the reference repository:

* ``m3/demo/experts/expert_monai_vista3d.py`` ``ExpertVista3D.segmentation_to_string``
  and ``expert_monai_brats.py`` ``ExpertBrats.segmentation_to_string`` (with
  ``utils.py`` ``get_monai_transforms``/``Dye``) on small NIfTI volumes written here:
  the colour text of a label slice;
* ``m3/data_prepare/experts/expert_train_data_vista3d.py`` ``main``,
  ``expert_train_data_brats.py`` ``main`` and ``expert_train_data_cxr.py`` ``main``
  (with ``expert_utils.py``) on small meta/prediction files written here;
* ``m3/data_prepare/experts/torchxrayvision/make_ensemble_probs.py`` on
  per-model prediction files written here (it reads the hard-coded folder
  ``/data/datasets/mimic-cxr/torchxrayvision/``, created here);
* NVlabs/VILA ``llava/data/dataset.py`` ``preprocess_multimodal`` (VILA1.5, the
  training code of the released checkpoints) on every conversation.

Stubs, only for imports the text building does not use: ``llava.data.dataset``
is not imported; its ``preprocess_multimodal`` source is extracted with ``ast``
and run with ``DEFAULT_IMAGE_TOKEN`` from ``llava/constants.py``, a
``conversation_lib`` whose default version is ``llama_3`` and ``data_args``
with ``is_multimodal=True, mm_use_im_start_end=False`` (VILA-M3's settings).
``expert_train_data_vista3d.main`` reads ``args.n_samplesn`` (a typo in the
reference), so both spellings are passed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REF_REPO = "Project-MONAI/VLM-Radiology-Agent-Framework"
VILA_REPO = "NVlabs/VILA"


def _commit(mirror: str) -> str:
    try:
        return subprocess.check_output(
            ["git", "-C", mirror, "rev-parse", "HEAD"], text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_preprocess(vila: Path):
    """VILA's preprocess_multimodal, extracted from its source and run with stub imports."""
    source = (vila / "llava/data/dataset.py").read_text()
    tree = ast.parse(source)
    func = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "preprocess_multimodal"
    )
    consts: dict = {}
    exec((vila / "llava/constants.py").read_text(), consts)
    ns = {
        **{k: v for k, v in consts.items() if k.isupper()},
        "Sequence": list,
        "Dict": dict,
        "DataArguments": object,
        "conversation_lib": argparse.Namespace(
            default_conversation=argparse.Namespace(version="llama_3")
        ),
    }
    exec(compile(ast.Module([func], []), "preprocess_multimodal", "exec"), ns)
    fn = ns["preprocess_multimodal"]
    data_args = argparse.Namespace(is_multimodal=True, mm_use_im_start_end=False)

    def normalise(conv: list[dict]) -> list[dict]:
        copy = [dict(t) for t in conv]
        return fn([copy], data_args)[0]

    return normalise


def write_nifti(path: Path, array: np.ndarray) -> str:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return str(path)


def demo_colours(ref: Path, work: Path) -> dict:
    """Colour texts of the demo's expert classes on small label volumes."""
    sys.path.insert(0, str(ref / "m3/demo"))
    from experts.expert_monai_brats import ExpertBrats
    from experts.expert_monai_vista3d import ExpertVista3D
    from experts.utils import Dye

    label_groups = json.loads((ref / "m3/demo/experts/label_groups_dict.json").read_text())
    image = np.full((24, 20, 6), 40.0, np.float32)
    out: dict = {"vista3d": {}, "slice_index": 3}
    cases = {
        "liver+hepatic tumor": {1: (slice(2, 14), slice(2, 14)), 26: (slice(5, 8), slice(5, 8))},
        "liver": {1: (slice(2, 14), slice(2, 14))},
        "organs": {
            1: (slice(2, 10), slice(2, 10)),
            3: (slice(12, 16), slice(2, 6)),
            5: (slice(12, 16), slice(8, 12)),
            14: (slice(18, 22), slice(2, 6)),
            4: (slice(18, 22), slice(10, 14)),
        },
    }
    for key, regions in cases.items():
        label = np.zeros(image.shape, np.uint8)
        for lid, (rows, cols) in regions.items():
            label[rows, cols, 2:5] = lid
        label[0:2, 0:2, 0] = 10  # off the shown slice: must not be named
        folder = work / key.replace(" ", "_").replace("+", "_")
        folder.mkdir()
        text = ExpertVista3D().segmentation_to_string(
            folder,
            write_nifti(folder / "img.nii.gz", image),
            write_nifti(folder / "seg.nii.gz", label),
            label_groups,
            slice_index=3,
        )
        out["vista3d"][key] = {
            "regions": {
                str(k): [v[0].start, v[0].stop, v[1].start, v[1].stop] for k, v in regions.items()
            },
            "text": text,
        }
    label = np.zeros(image.shape, np.uint8)
    label[4:16, 4:16, 2:5] = 2
    label[6:12, 6:12, 2:5] = 1
    label[8:10, 8:10, 2:5] = 4
    folder = work / "brats"
    folder.mkdir()
    out["brats"] = {
        "text": ExpertBrats().segmentation_to_string(
            folder,
            write_nifti(folder / "t1ce.nii.gz", image),
            write_nifti(folder / "seg.nii.gz", label),
            3,
            "img.jpg",
            "seg.jpg",
        )
    }
    # The palette: Dye's colormap for 20 label ids on one slice.
    ids = [1, 2, 3, 5, 7, 9, 11, 14, 18, 22, 25, 26, 30, 33, 40, 45, 50, 60, 90, 127]
    label = np.zeros((8, 8, 2), np.uint8)
    plane = label[:, :, 0]
    plane.flat[: len(ids)] = ids
    label[7, 7, 1] = 99  # on the other slice only: not in the colormap
    dyed = Dye(slice_index=0, output_dir=work / "dye")(
        {"image": np.zeros((8, 8, 2)), "label": label}
    )
    out["palette"] = {"ids": ids, "colormap": {str(int(k)): v for k, v in dyed["colormap"].items()}}
    return out


def vista3d_training(ref: Path, colours: dict) -> list[dict]:
    """expert_train_data_vista3d.main on meta files built from the demo colour texts."""
    experts = ref / "m3/data_prepare/experts"
    prefix = "The results are <image>. The colors in this image describe "

    def label_colors(key: str) -> str:
        return colours["vista3d"][key]["text"][len(prefix) :].rstrip().rstrip(".")

    metas = {
        "Task03": [
            {
                "image": "liver_3_slice3_img.png",
                "group_name": "hepatic tumor",
                "label_colors": label_colors("liver+hepatic tumor"),
                "num_tumors": [2],
                "found_tumor": ["hepatic tumor"],
            },
            {
                "image": "liver_4_slice3_img.png",
                "group_name": "hepatic tumor",
                "label_colors": label_colors("liver"),
                "num_tumors": [],
                "found_tumor": [],
            },
        ],
        "Task07": [],
        "Task09": [],
        "TotalSegmentatorV2": [
            {
                "image": f"s{i:04d}_slice3_img.png",
                "group_name": "organs",
                "label_colors": label_colors("organs"),
                "num_tumors": [],
                "found_tumor": [],
            }
            for i in range(6)
        ],
    }
    images = []
    for ds, entries in metas.items():
        folder = experts / "vista3d" / ds
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "extracted_slices_meta.json").write_text(json.dumps(entries))
        images += [f"/root/{ds}/{e['image']}\n" for e in entries]
    images.append("/root/unused/extra_slice0_img.png\n")
    (experts / "vista3d/ct2D_vista3d_images.txt").write_text("".join(images))
    n = sum(len(v) for v in metas.values())
    out = Path(tempfile.mkdtemp()) / "vista3d"
    os.chdir(experts)
    sys.path[:0] = [str(experts), str(ref / "m3/data_prepare")]
    import expert_train_data_vista3d as mod

    random.seed(0)
    mod.main(
        argparse.Namespace(
            root_dir="/root/", out_fileprefix=str(out), n_samples=n, n_samplesn=n, test_frac=0.0
        )
    )
    return json.loads(Path(str(out) + "_train.json").read_text())


def brats_training(ref: Path) -> list[dict]:
    experts = ref / "m3/data_prepare/experts"
    meta = [
        {
            "image": [f"c{i}/mri_0000{i}_img_{m}.png" for m in ("t1ce", "t1", "t2", "flair")],
            "label": f"c{i}/mri_0000{i}_label.png",
            "orig_images": [f"/data/{g}/Brats18_{i}_t1ce.nii.gz"],
        }
        for i, g in ((1, "HGG"), (2, "LGG"), (3, "HGG"))
    ]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.chdir(experts)
    import expert_train_data_brats as mod

    random.seed(0)
    mod.main(
        argparse.Namespace(
            in_meta_data=str(tmp / "meta.json"),
            images_root="",
            out_fileprefix=str(tmp / "brats"),
            n_samples=2,
            test_frac=0.0,
        )
    )
    return json.loads((tmp / "brats_train.json").read_text())


def cxr_training(ref: Path) -> tuple[list[dict], dict]:
    """make_ensemble_probs.py on per-model predictions, then expert_train_data_cxr.main."""
    tx = ref / "m3/data_prepare/experts/torchxrayvision"
    sys.path.insert(0, str(tx))
    from torchxray_cls import all_models

    pathologies = [
        "Atelectasis",
        "Consolidation",
        "Infiltration",
        "Pneumothorax",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Effusion",
        "Pneumonia",
        "Pleural_Thickening",
        "Cardiomegaly",
        "Nodule",
        "Mass",
        "Hernia",
        "Lung Lesion",
        "Fracture",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    ]
    root = Path("/data/datasets/mimic-cxr/torchxrayvision")
    rng = np.random.default_rng(7)
    per_model: dict = {}
    stems = ["p10_s1_v1", "p10_s2_v1", "p11_s3_v1"]
    for model in all_models:
        (root / model).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            values = {k: f"{float(rng.uniform(0.05, 0.95)):.4f}" for k in pathologies}
            per_model.setdefault(stem, {})[model] = values
            (root / model / f"{stem}.json").write_text(json.dumps(values, indent=4))
    os.chdir(tx)
    runpy_globals = {"__name__": "__main__"}
    exec(
        compile(
            (tx / "make_ensemble_probs.py").read_text(), str(tx / "make_ensemble_probs.py"), "exec"
        ),
        runpy_globals,
    )
    ensemble = {s: json.loads((root / "ensemble" / f"{s}.jpg.json").read_text()) for s in stems}
    data = [
        {
            "image": f"{s}.jpg",
            "conversations": [
                {"from": "human", "value": q + "\n<image>"},
                {"from": "gpt", "value": a},
            ],
        }
        for s, (q, a) in zip(
            stems,
            [
                ("Is there pleural effusion?", "Yes."),
                ("Which findings are present?", "Cardiomegaly and edema."),
                ("Is there any fracture?", "No."),
            ],
            strict=True,
        )
    ]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "in.json").write_text(json.dumps(data))
    os.chdir(tx.parent)
    import expert_train_data_cxr as mod

    random.seed(0)
    mod.main(
        argparse.Namespace(
            in_datafile=str(tmp / "in.json"),
            pred_root=str(root / "ensemble"),
            out_fileprefix=str(tmp / "cxr"),
            n_samples=2,
            test_frac=0.0,
        )
    )
    return json.loads((tmp / "cxr_train.json").read_text()), {
        "per_model": per_model,
        "ensemble": ensemble,
    }


def main() -> None:
    ref, vila, out = (
        Path(sys.argv[1]).resolve(),
        Path(sys.argv[2]).resolve(),
        Path(sys.argv[3]).resolve(),
    )
    normalise = load_preprocess(vila)
    work = Path(tempfile.mkdtemp())
    colours = demo_colours(ref, work)
    cases = []
    for kind, rows, fn in (
        ("vista3d", vista3d_training(ref, colours), "expert_train_data_vista3d.py main"),
        (
            "brats",
            brats_training(ref),
            "expert_train_data_brats.py main (+ expert_utils.add_brats_expert_conversation)",
        ),
    ):
        for row in rows:
            if "<image>" not in "".join(t["value"] for t in row["conversations"]):
                continue  # plain VQA rows without an expert call
            cases.append(
                {
                    "kind": kind,
                    "function": fn,
                    "raw": row["conversations"],
                    "conversation": normalise(row["conversations"]),
                    "images": row.get("images", []),
                }
            )
    cxr_rows, cxr_probs = cxr_training(ref)
    for row in cxr_rows:
        stem = row["image"].rsplit(".", 1)[0]
        cases.append(
            {
                "kind": "cxr",
                "function": "expert_train_data_cxr.py main "
                "(+ expert_utils.add_expert_conversation, get_predictions)",
                "raw": row["conversations"],
                "conversation": normalise(row["conversations"]),
                "images": [row["image"]],
                "ensemble": cxr_probs["ensemble"][stem],
            }
        )
    doc = {
        "provenance": {
            "reference": {"repo": REF_REPO, "commit": os.environ.get("REF_COMMIT", "unknown")},
            "vila": {
                "repo": VILA_REPO,
                "commit": os.environ.get("VILA_COMMIT", "unknown"),
                "file": "llava/data/dataset.py",
                "function": "preprocess_multimodal",
            },
            "demo": "m3/demo/experts/expert_monai_vista3d.py "
            "ExpertVista3D.segmentation_to_string; expert_monai_brats.py "
            "ExpertBrats.segmentation_to_string; utils.py Dye",
            "ensemble": "m3/data_prepare/experts/torchxrayvision/make_ensemble_probs.py (script)",
            "generator": "tests/agent/golden/make_golden.py",
        },
        "demo_colours": colours,
        "cxr_per_model": cxr_probs["per_model"],
        "cases": cases,
    }
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()

"""Benchmark: load DICOM series against SimpleITK, render three planes; CLI start-up time.

Not a test: it prints figures. Goals: loading a 300-slice series (folder or
zip) and a 1,500-slice thin-slice series at least as fast as SimpleITK's
``ImageSeriesReader`` (GDCM), peak RSS of the load <= 1.5x the array (issue
13); loading + rendering <= 3x the raw array; ``m3 --help`` under 1 s without
importing torch (issue 2). Every load runs in a fresh process; medm3 and
SimpleITK alternate so both see the same machine load.

Usage::

    python benchmarks/bench_imaging.py [--shape 512 512 300] [--thin 1500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """Write a synthetic axial CT series (int16 HU, slope 1, intercept -1024)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rows, cols, n = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:rows, :cols]
    body = ((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) < (0.45 * rows) ** 2
    order = rng.permutation(n)  # file names do not follow slice order
    for k in range(n):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesDescription = "CT", "bench series"
        ds.PatientName, ds.PatientID = "Bench^Patient", "BENCH1"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-180.0, -180.0, float(k)]
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        pix = np.where(body, 1024 + 40, 24).astype(np.int16)
        pix[rows // 3 : rows // 2, cols // 3 : cols // 2] = 1024 + 60 + (k % 50)
        ds.PixelData = pix.tobytes()
        ds.save_as(folder / f"img_{order[k]:05d}.dcm", enforce_file_format=True)


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
reader, path, out = sys.argv[1:4]
if reader == "medm3":
    from medm3.imaging import load_image
    from medm3.imaging.render import render_slice
else:
    import SimpleITK as sitk
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
if reader == "medm3":
    img = load_image(path)
    array = img.array
else:
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(path))
    array = sitk.GetArrayViewFromImage(r.Execute())
t2 = time.perf_counter()
peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = {}
if reader == "medm3" and out != "-":
    for plane in ("axial", "coronal", "sagittal"):
        s = time.perf_counter()
        render_slice(img, plane=plane).save(out + f"/{plane}.png")
        times[plane] = time.perf_counter() - s
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "render_s": times,
    "baseline_rss_mb": base / 1024, "peak_load_mb": peak_load / 1024, "peak_rss_mb": peak / 1024,
    "shape": list(array.shape), "dtype": str(array.dtype), "raw_mb": array.nbytes / 2**20}))
"""


def child(reader: str, path: Path, out: str = "-") -> dict:
    """Load ``path`` with ``reader`` (``medm3`` or ``sitk``) in a fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", CHILD, reader, str(path), out], capture_output=True, text=True
    )
    if run.returncode:
        sys.exit(f"{reader} failed on {path}:\n{run.stderr}")
    return json.loads(run.stdout)


def compare(label: str, medm3_path: Path, sitk_path: Path, repeats: int) -> dict:
    """Alternate medm3 and SimpleITK loads; print medians and their ratio."""
    runs: dict[str, list[dict]] = {"medm3": [], "sitk": []}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        runs["medm3"].append(child("medm3", medm3_path))
        runs["sitk"].append(child("sitk", sitk_path))
    med = {k: float(np.median([r["load_s"] for r in v])) for k, v in runs.items()}
    r = runs["medm3"][-1]
    rss = (r["peak_load_mb"] - r["baseline_rss_mb"]) / r["raw_mb"]
    s = runs["sitk"][-1]
    sitk_rss = (s["peak_load_mb"] - s["baseline_rss_mb"]) / s["raw_mb"]
    print(
        f"{label:<34} medm3 {med['medm3']:6.2f} s  SimpleITK {med['sitk']:6.2f} s  "
        f"ratio {med['medm3'] / med['sitk']:.2f}x (goal <= 1.0)  "
        f"peak RSS {rss:.2f}x array (SimpleITK {sitk_rss:.2f}x; goal <= 1.5)"
    )
    return r


def write_zip(folder: Path, target: Path) -> None:
    """Zip a series folder (deflate, as PACS exports and browsers do)."""
    import zipfile

    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"series/{f.name}")


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], metavar=("R", "C", "N"))
    ap.add_argument("--thin", type=int, default=1500, help="slices of the thin series (0: skip)")
    ap.add_argument("--repeats", type=int, default=3, help="loads per reader (median)")
    ap.add_argument("--keep", type=Path, help="write the series here and keep them")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        series = root / "series"
        if not series.is_dir():
            series.mkdir(parents=True)
            t = time.perf_counter()
            write_series(series, tuple(args.shape))
            print(f"wrote {args.shape[2]} slices in {time.perf_counter() - t:.1f} s")
        archive = root / "series.zip"
        if not archive.exists():
            write_zip(series, archive)
        print(f"load times: median of {args.repeats}, medm3 and SimpleITK interleaved")
        compare(f"{args.shape[2]} slices (folder)", series, series, args.repeats)
        compare(f"{args.shape[2]} slices (zip; SimpleITK folder)", archive, series, args.repeats)
        if args.thin:
            thin = root / "thin"
            if not thin.is_dir():
                thin.mkdir(parents=True)
                write_series(thin, (args.shape[0], args.shape[1], args.thin))
            compare(f"{args.thin} slices (folder)", thin, thin, args.repeats)
        r = child("medm3", series, tmp)
    raw_int16 = np.prod(args.shape) * 2 / 2**20
    extra = r["peak_rss_mb"] - r["baseline_rss_mb"]
    print(f"array: {r['shape']} {r['dtype']} = {r['raw_mb']:.0f} MB (int16 raw {raw_int16:.0f} MB)")
    print(
        f"load: {r['load_s']:.2f} s; render: "
        + ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in r["render_s"].items())
    )
    print(
        f"peak RSS {r['peak_rss_mb']:.0f} MB; above the {r['baseline_rss_mb']:.0f} MB start-up "
        f"baseline: {extra:.0f} MB = {extra / raw_int16:.2f}x the raw int16 array (goal <= 3x)"
    )

    env = dict(os.environ)
    m3 = [sys.executable, "-m", "medm3", "--help"]
    subprocess.run(m3, capture_output=True, env=env, check=True)  # warm the disk cache
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(m3, capture_output=True, env=env, check=True)
        walls.append(time.perf_counter() - t)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import medm3.cli.main; "
            "heavy = ('torch', 'monai', 'numpy', 'transformers'); "
            "print(sorted(m for m in heavy if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"`m3 --help`: median {sorted(walls)[2] * 1000:.0f} ms over 5 runs (goal < 1000 ms); "
        f"heavy modules imported by the CLI entry point: {probe}"
    )


if __name__ == "__main__":
    main()

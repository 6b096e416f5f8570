"""`m3 deid`: de-identify a DICOM file, folder or zip (PS3.15 Basic Profile)."""

from __future__ import annotations

from pathlib import Path

import click

from medm3.errors import InputError


@click.command("deid")
@click.argument("src", metavar="IN", type=click.Path(path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path())
@click.option(
    "--key",
    default=None,
    metavar="KEY",
    help="Secret key of the keyed UIDs and pseudonyms (default: $MEDM3_DEID_KEY, which "
    "keeps the key out of the process list; else a random key: outputs then cannot be "
    "linked with other runs).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--rename",
    is_flag=True,
    help="Name outputs <study UID>/<series UID>/<instance UID>.dcm (new UIDs) instead of "
    "copying input file names, which may themselves hold PHI.",
)
def deid(src: Path, dst: str, key: str | None, overwrite: bool, rename: bool) -> None:
    """De-identify IN (a DICOM file, a folder of them, or a .zip) into OUT.

    Applies the DICOM PS3.15 Basic Application Level Confidentiality Profile: names,
    IDs, dates, institutions and free text are removed or replaced, UIDs are replaced by
    keyed 2.25 UIDs (the same key keeps studies and series linked across runs), private
    tags, curves and overlays are removed.

    A folder or zip gives a folder, or a zip when OUT ends in .zip. Non-DICOM files are
    skipped and not copied. A single file gives a file; OUT ending in '/' (or an
    existing folder) means a folder, and the file keeps its name inside it. OUT is
    written atomically: on error nothing is left.

    Pixel data is NOT scrubbed: text burned into images (ultrasound, screenshots) stays.
    """
    from medm3.imaging.deid import deidentify_path

    if key is not None and not key:
        raise InputError("--key must not be empty")
    summary = deidentify_path(
        src, output_path(src, dst), key=key, overwrite=overwrite, rename=rename
    )
    click.echo(f"de-identified {len(summary.files)} file(s) -> {summary.output}")
    if summary.skipped:
        click.echo(f"skipped {len(summary.skipped)} file(s) (not copied):")
        for path, reason in summary.skipped:
            click.echo(f"  {path}: {reason}")
    warnings = summary.warnings
    click.echo(f"{len(warnings)} warning(s)" + (":" if warnings else ""))
    for warning in warnings:
        click.echo(f"  {warning}")
    if summary.random_key:
        click.echo(
            "note: no --key and no $MEDM3_DEID_KEY: a random key was used, so UIDs and "
            "pseudonyms will not match those of any other run"
        )


def output_path(src: Path, dst: str) -> Path:
    """Where OUT points: ``out_dir/`` (or an existing folder) for one file -> inside it."""
    import os

    folder_meant = dst.endswith(("/", os.sep)) or Path(dst).is_dir()
    single = src.is_file() and src.suffix.lower() != ".zip"
    return Path(dst) / src.name if folder_meant and single else Path(dst)

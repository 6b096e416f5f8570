"""`m3 doctor`: what is installed, which devices and weights are there, what is missing."""

from __future__ import annotations

import json

import click

_MARK = {"ok": "ok", "warn": "!!", "missing": "--", "info": "  "}


@click.command("doctor")
@click.option("-v", "--verbose", is_flag=True, help="Also print details (searched folders, URLs).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(verbose: bool, as_json: bool) -> None:
    """Check the installation: versions, torch/CUDA/MPS, weights, Java, Chromium, folders.

    Nothing is downloaded. Exit code 0 unless a core package is missing or the
    cache folder is not writable (then 1).
    """
    from medm3.doctor import run_checks

    checks = run_checks()
    bad = [c for c in checks if c.status == "missing" and c.section == "versions"] + [
        c for c in checks if c.section == "folders" and c.name == "cache" and c.status != "ok"
    ]
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        section = ""
        for check in checks:
            if check.section != section:
                section = check.section
                click.echo(f"\n{section}")
            click.echo(f"  [{_MARK.get(check.status, '  ')}] {check.name:<28} {check.detail}")
            if verbose:
                for line in check.details:
                    click.echo(f"         {line}")
    if bad:
        raise SystemExit(1)

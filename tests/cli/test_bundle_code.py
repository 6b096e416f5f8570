"""Which bundle network definitions build without --trust-bundle-code (issue 11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medm3.experts.bundle_code import TRUST_ENV, BundleCodeError, check_network_def

ACCEPTED = [
    {},
    {"network_def": {"_target_": "SegResNet", "in_channels": 4, "blocks_down": [1, 2, 2, 4]}},
    {
        "network_def": {
            "_target_": "monai.networks.nets.vista3d.VISTA3D",
            "image_encoder": {
                "_target_": "monai.networks.nets.SegResNetDS2",
                "in_channels": "@input_channels",
            },
        },
        "input_channels": 1,
    },
    # the released VISTA3D bundle's expression form
    {
        "network_def": "$monai.networks.nets.vista3d132(encoder_embed_dim=48, "
        "in_channels=@input_channels)",
        "input_channels": 1,
    },
]

REFUSED = [
    {"network_def": "$__import__('os').system('id')"},
    {"network_def": {"_target_": "os.system", "command": "id"}},
    {"network_def": {"_target_": "SegResNet", "in_channels": "$__import__('os').getpid()"}},
    {"network_def": {"_target_": "SegResNet", "in_channels": "@c"}, "c": "$print(1)"},
    {"network_def": {"_target_": "SegResNet", "in_channels": "@missing"}},
    {"network_def": "$monai.networks.nets.vista3d132(in_channels=__import__('os').getpid())"},
    {"network_def": "$monai.networks.nets.vista3d.torch.load('x')"},
    {"network_def": "$monai.networks.nets.vista3d132(**{'in_channels': 1})"},
    {"network_def": "$monai.networks.nets.vista3d132(1) or print(2)"},
    {"network_def": {"_target_": "SegResNet", "_mode_": "debug"}},
    {"network_def": {"_target_": "SegResNet", "_requires_": "$print(1)"}},
    {"network_def": "%other.json#network"},
    {"network_def": {"_target_": "monai.transforms.LoadImage"}},
]


@pytest.mark.parametrize("config", ACCEPTED)
def test_known_constructors_accepted(config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    check_network_def(config, "inference.json")


@pytest.mark.parametrize("config", REFUSED)
def test_code_refused_unless_trusted(config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(BundleCodeError, match="--trust-bundle-code") as err:
        check_network_def(config, Path("b/configs/inference.json"))
    assert str(err.value).startswith("b/configs/inference.json: ")
    monkeypatch.setenv(TRUST_ENV, "1")
    check_network_def(config, "inference.json")


@pytest.mark.parametrize(
    ("group", "name", "args"), [(None, "chat", []), ("experts", "run", ["measure"])]
)
def test_the_flag_trusts_bundle_code_for_the_run(
    group: str | None, name: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--trust-bundle-code` on `m3 chat` / `m3 experts run` sets the trust, only when given."""
    import click

    from medm3.cli.main import cli

    monkeypatch.setenv(TRUST_ENV, "0")  # restored (unset) after the test
    parent = cli.get_command(click.Context(cli), group) if group else cli
    cmd = parent.get_command(click.Context(parent), name)
    seen: list[str | None] = []

    def probe(*_args: object, **_kwargs: object) -> None:
        seen.append(os.environ.get(TRUST_ENV))

    monkeypatch.setattr(cmd, "callback", probe)
    for flags in ([], ["--trust-bundle-code"]):
        with pytest.raises(SystemExit) as done:
            cmd.main(args=[*args, *flags], standalone_mode=True)
        assert done.value.code == 0
    assert seen == ["0", "1"]
    assert os.environ[TRUST_ENV] == "0"  # the trust ends with the command that was given it
    with pytest.raises(BundleCodeError):
        check_network_def({"network_def": "$__import__('os').getpid()"}, Path("inference.json"))

"""Server defaults a new user meets: data folder, `GET /`, local expert weights, mock script."""

from __future__ import annotations

from pathlib import Path

import pytest

from medm3.serve.settings import DATA_DIR_ENV, ServeSettings, default_data_dir


def test_default_data_dir_is_the_platform_folder_never_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platformdirs

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    expected = Path(platformdirs.user_data_dir("medm3", appauthor=False)) / "serve"
    assert default_data_dir() == expected and expected.is_absolute()
    assert ServeSettings().data_dir == expected
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "d"))
    assert ServeSettings().data_dir == tmp_path / "d"


@pytest.mark.parametrize(("ui", "target"), [(False, "/docs"), (True, "/ui/")])
def test_root_redirects(client_for, monkeypatch, ui: bool, target: str) -> None:
    import sys
    import types

    fake_ui = types.ModuleType("medm3.serve.ui")  # the Gradio app itself is tested elsewhere
    fake_ui.mount_ui = lambda app, svc: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medm3.serve.ui", fake_ui)
    client = client_for(ui=ui)
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == target


def test_server_weights_setting_reaches_the_experts(tmp_path: Path) -> None:
    """An expert run is refused (503) without weights, accepted with --weights NAME=DIR."""
    from medm3.serve import expert_runs

    bundle = tmp_path / "brats_bundle" / "models"
    bundle.mkdir(parents=True)
    (bundle / "model.pt").write_bytes(b"w")

    class Brats:
        name, weights_name = "brats", "brats"

    with pytest.raises(Exception, match="not installed"):
        expert_runs.check_weights(Brats)
    expert_runs.check_weights(Brats, bundle.parent)  # the configured folder is enough
    with pytest.raises(Exception, match="not installed"):
        expert_runs.check_weights(Brats, tmp_path)  # a folder without the files is not


def test_cli_serve_options(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.helpers import assert_one_line_error, run

    script = tmp_path / "s.txt"
    script.write_text("hello\n")
    code, _, err = run(["serve", "--backend", "vila", "--mock-script", str(script)], capsys)
    assert_one_line_error(code, err, "--mock-script needs --backend mock")
    code, _, err = run(["serve", "--backend", "mock", "--weights", "vista3d"], capsys)
    assert_one_line_error(code, err, "--weights takes NAME=DIR")
    code, _, err = run(
        ["serve", "--backend", "mock", "--weights", f"vista3d={tmp_path / 'nope'}"], capsys
    )
    assert_one_line_error(code, err, "weights folder not found")
    code, _, err = run(["serve", "--backend", "mock", "--weights", f"nosuch={tmp_path}"], capsys)
    assert code == 2 and "nosuch" in err


def test_mock_script_backend_built_from_settings(tmp_path: Path) -> None:
    from medm3.cli.serve import _load_vlm

    script = tmp_path / "s.txt"
    script.write_text("<VISTA3D(liver)>\n---\nDone.\n")
    settings = ServeSettings(backend="mock", mock_script=script, data_dir=tmp_path)
    vlm = _load_vlm(settings, device=None, base_url=None)
    from medm3.vlm.base import Message

    ask = [Message.text("user", "hi")]
    assert [vlm.generate(ask).text for _ in range(3)] == [
        "<VISTA3D(liver)>",
        "Done.",
        "(mock model) You asked: hi",
    ]

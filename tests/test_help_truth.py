"""Help and messages that tell the truth: lists of names come from the registries, errors are one
line, and each wrong message a new user met is fixed (issue 18)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

from detectors.base import CLASSIFIERS
from detectors.detector import valid_pairs
from detectors.features import FEATURES
from gans.networks import ARCHITECTURES
from gans.sngan import SHORTCUTS
from gans.upsamplers import UPSAMPLERS
from pipelines.cli import app
from pipelines.study.config import packaged_configs

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"


def _command(*path: str):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _param(command, name: str):
    return next(p for p in command.params if p.name == name)


def _listed(text: str, after: str) -> set[str]:
    """The names of an ``a, b or c`` list that follows ``after`` in a help text (up to the next ')' or '.')."""
    tail = text.split(after, 1)[1]
    tail = re.split(r"\s*\(|[.;](?:\s|$)|\)", tail, maxsplit=1)[0]
    return {w.strip() for w in re.split(r",| or ", tail) if w.strip()}


# --------------------------------------------------------------------------- lists from the registries


def test_train_help_lists_every_registered_name_and_nothing_else():
    train = _command("train")
    assert _listed(_param(train, "upsampler").help, "Upsampler: ") == set(UPSAMPLERS)
    assert _listed(_param(train, "arch").help, "Architecture: ") == set(ARCHITECTURES)
    assert _listed(_param(train, "shortcut").help, "shortcut: ") == set(SHORTCUTS)


def test_study_help_lists_every_packaged_config():
    listed = _listed(_param(_command("study"), "config").help, "packaged one (")
    assert listed == set(packaged_configs()) and "imagewoof-dcgan32-cpu" in listed


def test_quickstart_help_lists_the_upsamplers_the_quickstart_trains_and_counts_none_by_hand():
    from pipelines.study.config import load_config

    text = _command("quickstart").help
    trained = {g.upsampler for g in load_config("quickstart").generators}
    assert _listed(text, "per upsampler (") == trained and trained <= set(UPSAMPLERS)
    assert "binomial" not in trained  # bilinear by another name: the quickstart leaves it out
    root = runner.invoke(app, ["--help"], env={"COLUMNS": "400"}).output
    for word in ("six", "seven", "eight"):
        assert f"{word} upsamplers" not in text and f"{word} upsamplers" not in root


def test_detect_list_lists_every_feature_classifier_and_pair_in_plain_text():
    result = runner.invoke(app, ["detect", "list"])
    assert result.exit_code == 0, result.output
    text = result.output
    sections = dict(re.findall(r"^(\w[\w ]*):\n((?:  .*\n)+)", text, flags=re.M))
    features = {line.split()[0] for line in sections["features"].splitlines()}
    classifiers = {line.split()[0] for line in sections["classifiers"].splitlines()}
    assert features == set(FEATURES) and classifiers == set(CLASSIFIERS)
    assert set(sections["valid pairs"].split()) == set(valid_pairs())
    assert "``" not in text and ":func:" not in text and "module docstring" not in text


def test_readme_train_row_names_only_real_options():
    row = next(line for line in README.read_text(encoding="utf-8").splitlines()
               if line.startswith("| `forgelab train"))
    options = {o for p in _command("train").params for o in p.opts + p.secondary_opts}
    named = set(re.findall(r"(?<!tensorboard )(--[a-z][a-z-]*)", row))  # not another program's options
    assert named and named <= options, sorted(named - options)


# --------------------------------------------------------------------------- errors and --version


@pytest.mark.parametrize("args", [["train", "--no-such-option"], ["no-such-command"],
                                  ["train", "--steps", "many", "--out", "x"], ["detect", "fit"]])
def test_usage_errors_are_one_line_starting_with_error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    text = result.output.strip()
    assert text.startswith("Error: ") and len(text.splitlines()) == 1, text
    assert "╭" not in text and "--help" in text


def test_version_option_prints_the_installed_version():
    from pipelines.cli import _version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"forgelab {_version()}"


def test_detect_fit_help_shows_a_plain_default_for_the_feature_batch():
    param = _param(_command("detect", "fit"), "feature_batch_size")
    assert param.show_default == "512"


def test_data_info_on_a_folder_of_junk_is_one_sentence(tmp_path):
    for i in range(3):
        (tmp_path / f"junk_{i}.png").write_bytes(b"not an image at all " * 4)
    result = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert result.exit_code == 1
    text = result.output.strip()
    assert text.startswith("Error: None of the 3 image file(s)") and len(text.splitlines()) == 1, text
    assert "None .. None" not in text


# --------------------------------------------------------------------------- detect fit


def _jpegs(images, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"f_{i:03d}.jpg", quality=80)


def test_detect_fit_takes_the_fakes_native_size_and_names_no_missing_option(tmp_path):
    write_pngs(smooth_images(24, 32, seed=1), tmp_path / "real")
    _jpegs(smooth_images(24, 32, seed=2), tmp_path / "fake")  # JPEG fakes against PNG reals: a parity warning
    out = tmp_path / "model"
    result = runner.invoke(app, ["detect", "fit", "-d", "radial:lr", "--real", str(tmp_path / "real"),
                                 "--fake", str(tmp_path / "fake"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["config"]["resolution"] == 32  # not upsampled to 64
    assert "at 32 px" in result.output
    warnings = [x for x in result.output.splitlines() if x.startswith("Warning:")]
    assert warnings and not any("pass --jpeg" in w for w in warnings)
    options = {o for p in _command("detect", "fit").params for o in p.opts}
    for w in warnings:  # every option a warning tells the user to pass is one detect fit has
        for opt in re.findall(r"pass (--[a-z-]+)", w):
            assert opt in options, w


# --------------------------------------------------------------------------- studies


def test_study_warnings_keep_their_config_section(capsys):
    from pipelines.study.run import print_warnings

    print_warnings(["fake set 'x' is JPEG but the real set is PNG; set [transfer] jpeg = Q to re-encode both."])
    err = capsys.readouterr().err
    assert "set [transfer] jpeg = Q" in err and "Warning:" in err


def test_train_shortcut_option_reaches_the_sngan(tmp_path):
    from gans.checkpoint import load_checkpoint

    write_pngs(smooth_images(8, 32, seed=4), tmp_path / "data")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--arch", "sngan", "--shortcut", "upsampler", "--data", str(tmp_path / "data"),
                                 "--resolution", "32", "--steps", "1", "--batch-size", "4", "--width", "8",
                                 "--ckpt-every", "0", "--sample-every", "0", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "checkpoint.pt")["config"]["shortcut"] == "upsampler"


def test_an_imagewoof_root_trains_on_train_and_tests_on_val_by_default(tmp_path):
    from pipelines.study.config import load_config
    from pipelines.study.run import _load_real

    root = tmp_path / "woof"
    write_pngs(smooth_images(30, 32, seed=5), root / "train" / "n001")
    write_pngs(smooth_images(12, 32, seed=6), root / "val" / "n001")
    cfg = load_config({"study": {"name": "w", "resolution": 32, "n_real": 30},
                       "grid": {"upsamplers": ["nearest"]}, "generate": {"n": 20}})
    assert cfg.study.subset is None
    real, spec = _load_real(cfg, root, progress=False)
    assert Path(spec) == root / "train" and Path(real.test_from) == root / "val"
    assert len(real.train) == 30 and real.test is not None

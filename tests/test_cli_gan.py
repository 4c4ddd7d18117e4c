"""``forgelab train`` / ``forgelab generate``: every arch x upsampler x spectral-D combination, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

from gans.checkpoint import load_checkpoint
from gans.networks import ARCHITECTURES
from gans.sampling import generate_tensor, load_generator
from gans.upsamplers import UPSAMPLERS
from pipelines.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """16 PNGs of 40 px (training resizes and centre-crops them to 32 px)."""
    folder = tmp_path_factory.mktemp("data")
    write_pngs(smooth_images(16, 40, seed=2), folder)
    return folder


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--resolution", "32", "--steps", "2", "--batch-size", "4",
            "--width", "8", "--ckpt-every", "0", "--sample-every", "0", "--device", "cpu", "--out", str(out),
            *extra]


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("Error: ") and len(text.splitlines()) == 1 and "Traceback" not in text, text
    for n in needles:
        assert n in text, text
    return text


@pytest.mark.parametrize("spectral_d", [False, True], ids=["image-d", "spectral-d"])
@pytest.mark.parametrize("upsampler", list(UPSAMPLERS))
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_train_then_generate_every_combination(arch, upsampler, spectral_d, data_dir, tmp_path):
    run = tmp_path / "run"
    flag = "--spectral-d" if spectral_d else "--no-spectral-d"
    r = invoke(*train_args(data_dir, run, "--arch", arch, "--upsampler", upsampler, flag))
    assert r.exit_code == 0, r.output
    state = load_checkpoint(run / "checkpoint.pt")
    cfg = state["config"]
    assert (cfg["arch"], cfg["upsampler"], cfg["spectral_d"], state["step"]) == (arch, upsampler, spectral_d, 2)
    assert (state["SD"] is not None) == spectral_d
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"

    fake = tmp_path / "fake"
    r = invoke("generate", run, "--n", "3", "--out", fake, "--seed", "1", "--device", "cpu")
    assert r.exit_code == 0, r.output
    files = sorted(fake.glob("*.png"))
    assert len(files) == 3
    G, _ = load_generator(run)
    expected = generate_tensor(G, 3, seed=1)
    for f, img in zip(files, expected, strict=True):
        with Image.open(f) as im:
            assert im.mode == "RGB" and im.size == (32, 32)
            assert np.array_equal(np.asarray(im), img.permute(1, 2, 0).numpy())
    m = json.loads((fake / "manifest.json").read_text())
    assert (m["arch"], m["upsampler"], m["count"], m["seed"], m["resolution"]) == (arch, upsampler, 3, 1, 32)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_train_sinc_alias_free_and_generate(arch, data_dir, tmp_path):
    run = tmp_path / "run"
    r = invoke(*train_args(data_dir, run, "--arch", arch, "--upsampler", "sinc", "--alias-free"))
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "checkpoint.pt")["config"]["alias_free"] is True
    G, meta = load_generator(run)
    assert meta["alias_free"] is True and any(type(m).__name__ == "FilteredReLU" for m in G.modules())
    r = invoke("generate", run, "--n", "2", "--out", tmp_path / "fake", "--device", "cpu")
    assert r.exit_code == 0, r.output
    # The old name is refused with the new one.
    one_line_error(invoke(*train_args(data_dir, tmp_path / "old", "--arch", arch, "--upsampler", "filtered")),
                   "renamed 'binomial'")


def test_unknown_upsampler_arch_and_resolution_are_one_line_errors(data_dir, tmp_path):
    one_line_error(invoke(*train_args(data_dir, tmp_path / "a", "--arch", "dcgan", "--upsampler", "foo")),
                   "'foo'", "bed_of_nails", "pixelshuffle")
    one_line_error(invoke(*train_args(data_dir, tmp_path / "b", "--arch", "biggan", "--upsampler", "nearest")),
                   "'biggan'", "dcgan", "sngan")
    r = invoke(*train_args(data_dir, tmp_path / "c", "--arch", "dcgan", "--upsampler", "nearest"),
               "--resolution", "48")
    one_line_error(r, "48", "32, 64, 128")
    assert not (tmp_path / "a").exists()  # nothing written for a bad config


def test_finished_run_needs_overwrite_and_other_arch_checkpoint_is_named(data_dir, tmp_path):
    run = tmp_path / "run"
    assert invoke(*train_args(data_dir, run, "--arch", "dcgan", "--upsampler", "nearest")).exit_code == 0
    first = (run / "checkpoint.pt").read_bytes()
    one_line_error(invoke(*train_args(data_dir, run, "--arch", "dcgan", "--upsampler", "nearest")),
                   "finished", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == first
    # Resuming with another architecture stops with both names, not a load_state_dict trace.
    one_line_error(invoke(*train_args(data_dir, run, "--arch", "sngan", "--upsampler", "nearest", "--resume")),
                   "dcgan", "sngan")
    r = invoke(*train_args(data_dir, run, "--arch", "dcgan", "--upsampler", "bilinear", "--seed", "3",
                           "--overwrite"))
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run)["config"]["upsampler"] == "bilinear"


def test_resume_reuses_saved_options_and_extends_the_run(data_dir, tmp_path):
    run = tmp_path / "run"
    assert invoke(*train_args(data_dir, run, "--arch", "dcgan", "--upsampler", "pixelshuffle")).exit_code == 0
    r = invoke("train", "--out", run, "--resume", "--steps", "3")
    assert r.exit_code == 0, r.output
    state = load_checkpoint(run)
    assert state["step"] == 3 and state["config"]["upsampler"] == "pixelshuffle" and state["config"]["width"] == 8
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [2, 3]


def test_config_file_supplies_defaults_and_rejects_unknown_keys(data_dir, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'data = "{data_dir}"\n[train]\narch = "sngan"\nupsampler = "bicubic"\nwidth = 4\n'
                    'steps = 1\nbatch_size = 2\nspectral_reg = 0.5\nsample_every = 0\ndevice = "cpu"\n')
    run = tmp_path / "run"
    r = invoke("train", "--config", good, "--out", run, "--batch-size", "4")  # the CLI option wins
    assert r.exit_code == 0, r.output
    cfg = load_checkpoint(run)["config"]
    assert (cfg["arch"], cfg["upsampler"], cfg["width"], cfg["spectral_reg"], cfg["batch_size"]) == (
        "sngan", "bicubic", 4, 0.5, 4)
    bad = tmp_path / "bad.toml"
    bad.write_text('arch = "dcgan"\nlearning_rate = 0.1\n')
    one_line_error(invoke("train", "--config", bad, "--out", tmp_path / "x"), "'learning_rate'", "upsampler",
                   "spectral_d")


def test_generate_errors_are_one_line(tmp_path):
    one_line_error(invoke("generate", tmp_path / "missing", "--n", "2", "--out", tmp_path / "f"), "does not exist")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(invoke("generate", broken, "--n", "2", "--out", tmp_path / "f"), "damaged or incomplete")
    torch.save({"format": "forgelab-gan-checkpoint"}, tmp_path / "noconfig.pt")
    one_line_error(invoke("generate", tmp_path / "noconfig.pt", "--n", "2", "--out", tmp_path / "f"),
                   "not a forgelab GAN checkpoint")
    assert not (tmp_path / "f").exists()

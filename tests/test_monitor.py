"""Training you can watch: TensorBoard event files, the samples' spectrum, and plain progress lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import smooth_images

from detectors.fidelity import profiles
from gans.monitor import Monitor, spectrum_plot
from gans.training import LOG, TrainConfig, train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_a_20_step_run_writes_scalars_images_and_spectra_tensorboard_can_read(tmp_path, capsys):
    images = smooth_images(32, 32, seed=1)
    cfg = TrainConfig(resolution=32, steps=20, batch_size=8, width=8, z_dim=16, log_every=5, sample_every=10,
                      ckpt_every=0, device="cpu", ema=0.9)
    train(cfg, images, tmp_path, progress=True)  # no terminal under pytest: plain progress lines

    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/d", "loss/g", "D/real", "D/fake", "lr/G", "lr/D", "speed/images_per_s",
                "spectrum/radial_l1"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert {"samples", "spectrum/radial"} <= set(tags["images"])

    log = [json.loads(x) for x in (tmp_path / LOG).read_text().splitlines()]
    # The scalars are the log's numbers, step for step.
    assert [e.step for e in acc.Scalars("loss/d")] == [r["step"] for r in log] == [5, 10, 15, 20]
    assert [e.value for e in acc.Scalars("D/real")] == pytest.approx([r["d_real"] for r in log], rel=1e-6)
    assert [e.value for e in acc.Scalars("lr/G")] == pytest.approx([r["lr_g"] for r in log], rel=1e-6)
    assert [e.step for e in acc.Scalars("spectrum/radial_l1")] == [10, 20]
    # Grids at the sample steps, 8x8 images of 32 px with 2 px padding: (8 * 34 + 2) pixels a side.
    grids = acc.Images("samples")
    assert [g.step for g in grids] == [10, 20] and grids[0].width == grids[0].height == 8 * 34 + 2

    lines = [x for x in capsys.readouterr().err.splitlines() if "step " in x]
    assert lines and lines[-1].startswith(f"{tmp_path.name}: step 20/20 ")


def test_spectral_distance_is_the_fidelity_radial_l1_of_the_grid():
    real = smooth_images(40, 32, seed=2)
    m = Monitor(None, real, enabled=False)
    grid = torch.rand(64, 3, 32, 32) * 2 - 1
    from gans.sampling import to_uint8

    want = float((profiles(to_uint8(grid))["radial"].mean(0) - profiles(real)["radial"].mean(0)).abs().mean())
    assert m.samples(1, grid) == pytest.approx(want, rel=1e-6)
    # Samples that are the real images themselves are at distance 0.
    assert m.samples(2, real.float() / 127.5 - 1) == pytest.approx(0.0, abs=1e-12)


def test_spectrum_plot_draws_both_profiles_where_they_are():
    flat_low, flat_high = np.zeros(16), np.ones(16)
    img = spectrum_plot(flat_low, flat_high, size=(100, 60))
    assert img.shape == (3, 60, 100) and img.dtype == np.uint8
    # Real (grey) along the bottom of the frame, the generator's (orange) along the top.
    orange = (img[0] > 200) & (img[1] > 100) & (img[1] < 140) & (img[2] < 40)
    grey = (img[0] < 100) & (img[0] == img[1]) & (img[1] == img[2])
    rows_orange, rows_grey = np.nonzero(orange.any(1))[0], np.nonzero(grey.any(1))[0]
    assert 10 <= rows_orange.min() <= 14 and 46 <= rows_grey.max() <= 50

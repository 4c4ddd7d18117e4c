"""Sampling: seeded latents per image index, uint8 conversion, fake sets on disk equal to memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images
from PIL import Image

from gans.checkpoint import load_checkpoint
from gans.networks import build_generator
from gans.sampling import (
    FORWARD_CHUNK,
    Z_CHUNK,
    _encode_all,
    generate,
    generate_tensor,
    latents,
    load_generator,
    png_name,
    to_uint8,
    write_fake_set,
)
from gans.training import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-step DCGAN run with EMA (so the checkpoint holds both G and G_ema)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(arch="dcgan", upsampler="nearest", steps=2, batch_size=4, width=4, ema=0.9,
                      ckpt_every=0, sample_every=0, device="cpu")
    train(cfg, smooth_images(16, 32, seed=5), out)
    return out


def read_pngs(folder: Path) -> torch.Tensor:
    files = sorted(folder.glob("*.png"))
    arrays = []
    for f in files:
        with Image.open(f) as im:
            assert im.mode == "RGB"
            arrays.append(np.asarray(im))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_latents_depend_only_on_seed_and_index():
    z_all = latents(7, range(0, 600), 16)
    parts = torch.cat([latents(7, range(0, 5), 16), latents(7, range(5, 300), 16), latents(7, range(300, 600), 16)])
    assert torch.equal(z_all, parts)
    # Any subset (e.g. one rank's shard rank::world) picks the same rows.
    assert torch.equal(latents(7, range(1, 600, 3), 16), z_all[1::3])
    assert not torch.equal(latents(8, range(0, 600), 16), z_all)
    # Different chunks are independent draws, and each is standard normal.
    assert not torch.equal(z_all[:Z_CHUNK], z_all[Z_CHUNK : 2 * Z_CHUNK])
    assert abs(z_all.mean().item()) < 0.05 and abs(z_all.std().item() - 1) < 0.05


def test_to_uint8_maps_the_tanh_range_with_rounding_and_clamping():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0 / 255, 1.0, 3.0])
    # (x + 1) * 127.5: 0, 0, 63.75 -> 64, 127.5 -> 128 (half to even), 128.0, 255, clamp 255
    assert to_uint8(x).tolist() == [0, 0, 64, 128, 128, 255, 255]


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_generation_is_seeded_and_independent_of_batch_size(arch):
    torch.manual_seed(0)
    G = build_generator(arch, 32, "bilinear", width=4)
    n = FORWARD_CHUNK + 22  # more than one forward pass
    a = generate_tensor(G, n, seed=3, batch_size=n)
    b = generate_tensor(G, n, seed=3, batch_size=4)
    batches = list(generate(G, n + 5, seed=3, batch_size=40))
    assert [x.shape[0] for x in batches] == [40] * ((n + 5) // 40) + [(n + 5) % 40]
    assert a.dtype == torch.uint8 and a.shape == (n, 3, 32, 32)
    # Exactly equal bytes, whatever the batch size or the number of images asked for.
    assert torch.equal(a, b) and torch.equal(a, torch.cat(batches)[:n])
    assert not torch.equal(a[:5], generate_tensor(G, 5, seed=4))
    assert G.training  # generate() puts G in eval mode only while it runs


def test_load_generator_uses_ema_weights(run_dir):
    G, meta = load_generator(run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert meta["ema"] and meta["arch"] == "dcgan" and meta["upsampler"] == "nearest" and meta["step"] == 2
    for k, v in G.state_dict().items():
        assert torch.equal(v, state["G_ema"][k])
    assert any(not torch.equal(state["G_ema"][k], state["G"][k]) for k in state["G"])
    assert not G.training


def test_fake_set_on_disk_equals_in_memory_images(run_dir, tmp_path):
    out = write_fake_set(run_dir, 10, tmp_path / "fake", seed=2, batch_size=4, device="cpu", workers=2)
    G, _ = load_generator(run_dir / "checkpoint.pt")
    assert torch.equal(read_pngs(out), generate_tensor(G, 10, seed=2, batch_size=3))
    m = json.loads((out / "manifest.json").read_text())
    assert {k: m[k] for k in ("arch", "upsampler", "seed", "count", "resolution", "status")} == {
        "arch": "dcgan", "upsampler": "nearest", "seed": 2, "count": 10, "resolution": 32, "status": "finished"}
    assert Path(m["checkpoint"]) == (run_dir / "checkpoint.pt").resolve()
    assert sorted(p.name for p in out.glob("*.png")) == [png_name(i, 10) for i in range(10)]
    assert not list(out.glob(".*"))  # no temp files left


def test_finished_fake_set_is_not_overwritten_unless_asked(run_dir, tmp_path):
    out = tmp_path / "fake"
    write_fake_set(run_dir, 6, out, seed=0, batch_size=6, device="cpu")
    first = (out / png_name(0, 6)).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_fake_set(run_dir, 3, out, seed=1, device="cpu")
    assert (out / png_name(0, 6)).read_bytes() == first
    write_fake_set(run_dir, 3, out, seed=1, device="cpu", overwrite=True)
    assert len(list(out.glob("*.png"))) == 3  # the 3 extra images of the old set are gone
    assert json.loads((out / "manifest.json").read_text())["count"] == 3


def test_rank_shards_together_equal_the_single_process_set(run_dir, tmp_path):
    G, _ = load_generator(run_dir)
    n = 9
    for rank in range(2):  # what two torchrun ranks write: indices rank::2
        _encode_all(G, torch.arange(rank, n, 2), n, 5, 3, torch.device("cpu"), tmp_path, False, 2)
    assert torch.equal(read_pngs(tmp_path), generate_tensor(G, n, seed=5))


def test_bad_arguments_are_named(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "nothing")
    G, _ = load_generator(run_dir)
    with pytest.raises(ValueError, match="positive"):
        generate_tensor(G, 0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_tensor(G, 3, batch_size=0)


def test_a_checkpoint_of_the_old_filtered_kind_loads_as_binomial_and_resumes(tmp_path):
    # "filtered" was renamed "binomial" (it is bilinear interpolation); the FIR kernel is not stored,
    # so an old checkpoint is exactly a binomial one. Write one as the old code did and load it.
    cfg = TrainConfig(arch="dcgan", upsampler="binomial", steps=1, batch_size=4, width=4,
                      ckpt_every=0, sample_every=0, device="cpu")
    images = smooth_images(16, 32, seed=6)
    train(cfg, images, tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["config"] = {k: v for k, v in state["config"].items() if k != "alias_free"}  # before alias_free existed
    state["config"]["upsampler"] = "filtered"
    torch.save(state, path)
    cfg_file = tmp_path / "train_config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"binomial"', '"filtered"'))
    assert load_checkpoint(path)["config"]["upsampler"] == "binomial"
    G, meta = load_generator(tmp_path)
    assert meta["upsampler"] == "binomial" and meta["alias_free"] is False
    for k, v in G.state_dict().items():
        assert torch.equal(v, state["G"][k])
    # Resuming the old run under the new name continues it.
    train(TrainConfig(**{**cfg.to_dict(), "steps": 2, "betas": None}), images, tmp_path, resume=True)
    assert load_checkpoint(path)["step"] == 2

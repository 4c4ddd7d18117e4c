"""The training loop: exact resume (after a clean stop, Ctrl-C and SIGKILL), NaN stop, logs, EMA, checkpoints."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import smooth_images
from PIL import Image

import gans.losses
from gans.checkpoint import load_checkpoint, load_module_state, save_checkpoint, write_atomically
from gans.networks import ARCH_DEFAULTS, build_generator
from gans.training import (
    CHECKPOINT,
    CONFIG,
    LOG,
    EpochSampler,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    train,
)

REPO = Path(__file__).resolve().parents[1]
NETS = ("G", "D", "SD", "G_ema")


def tiny(**kw) -> TrainConfig:
    """A config small enough for a 2-core CPU: width 4, batch 4, every extra feature on.

    Linear learning-rate decay is on, so the exact-resume tests also cover the schedulers of
    G, D and the spectral D.
    """
    base = dict(arch="dcgan", upsampler="bilinear", resolution=32, steps=6, batch_size=4, width=4,
                spectral_d=True, spectral_reg=0.1, ema=0.9, ckpt_every=2, sample_every=0, log_every=1,
                lr_decay="linear", device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images(20, 32, seed=3)


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> dict:
    """Checkpoint of an uninterrupted 6-step DCGAN run (spectral D, spectral reg and EMA on)."""
    out = tmp_path_factory.mktemp("reference")
    train(tiny(), images, out)
    return load_checkpoint(out / CHECKPOINT)


def assert_same_networks(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for net in NETS:
        assert (a.get(net) is None) == (b.get(net) is None), net
        if a.get(net) is None:
            continue
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"


# ----------------------------------------------------------------------------- config
def test_from_dict_rejects_unknown_keys_and_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({"arch": "dcgan", "stepz": 3})
    msg = str(e.value)
    assert "'stepz'" in msg and "steps" in msg and "upsampler" in msg and "spectral_reg" in msg


@pytest.mark.parametrize("field,value,expected", [
    ("upsampler", "foo", "bed_of_nails"),
    ("arch", "stylegan", "sngan"),
    ("resolution", 48, "32, 64, 128"),
    ("device", "tpu", "cuda"),
    ("spectral_d_weight", 1.5, "[0, 1]"),
    ("batch_size", 0, ">= 1"),
])
def test_bad_config_values_name_the_fix(field, value, expected):
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({field: value})
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_resolved_takes_each_arch_defaults_and_betas_list_round_trips():
    for arch, d in ARCH_DEFAULTS.items():
        r = TrainConfig(arch=arch).resolved()
        assert (r.loss, r.lr, r.betas, r.n_dis) == (d["loss"], d["lr"], tuple(d["betas"]), d["n_dis"])
        assert r.lr_decay == (d["lr_decay"] or "none")
    cfg = TrainConfig.from_dict(TrainConfig(betas=(0.1, 0.2)).to_dict())
    assert cfg.betas == (0.1, 0.2)


def test_epoch_sampler_visits_every_index_once_per_epoch_and_resumes():
    s = EpochSampler(10, seed=1)
    first = s.take(7)
    state = s.state_dict()
    rest = s.take(13)  # 3 to finish epoch 1, then 10 of epoch 2
    epoch1 = torch.cat([first, rest[:3]])
    assert sorted(epoch1.tolist()) == list(range(10))
    assert sorted(rest[3:].tolist()) == list(range(10))
    t = EpochSampler(10, seed=99)
    t.load_state_dict(state)
    assert torch.equal(t.take(13), rest)


def test_images_are_validated(images):
    with pytest.raises(ValueError, match="uint8"):
        Trainer(tiny(), images.float(), "unused")
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        Trainer(tiny(resolution=64), images, "unused")


# ----------------------------------------------------------------------------- resume
def test_resume_after_n_steps_is_bit_identical_to_uninterrupted(images, tmp_path):
    # Extending a finished run to more steps: without decay, since a linear schedule depends on
    # the total (the kill/Ctrl-C tests below cover resuming under linear decay).
    train(tiny(lr_decay="none"), images, tmp_path / "full")
    train(tiny(steps=3, ckpt_every=3, lr_decay="none"), images, tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    train(tiny(steps=6, ckpt_every=3, lr_decay="none"), images, tmp_path, resume=True)
    assert_same_networks(load_checkpoint(tmp_path / CHECKPOINT), load_checkpoint(tmp_path / "full" / CHECKPOINT))
    # The log of a resumed run is continuous: one record per step, no repeats.
    steps = [json.loads(line)["step"] for line in (tmp_path / LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_saves_at_step_boundary_then_resume_matches(images, tmp_path, monkeypatch):
    # SNGAN with its linear LR decay and n_dis > 1: the interrupted run must keep the schedule.
    cfg = tiny(arch="sngan", upsampler="nearest", n_dis=2, steps=4, ckpt_every=0, spectral_reg=0.0)
    train(cfg, images, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / CHECKPOINT)

    calls = {"n": 0}
    real_g_loss = gans.losses.g_loss

    def g_loss_with_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside step 3 (two g_loss calls per step: image D and spectral D)
            signal.raise_signal(signal.SIGINT)
        return real_g_loss(*args, **kwargs)

    monkeypatch.setattr(gans.losses, "g_loss", g_loss_with_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, images, tmp_path / "cut")
    monkeypatch.setattr(gans.losses, "g_loss", real_g_loss)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 3  # step 3 was completed
    assert signal.getsignal(signal.SIGINT) is handler  # our handler was removed again
    train(cfg, images, tmp_path / "cut", resume=True)
    assert_same_networks(load_checkpoint(tmp_path / "cut" / CHECKPOINT), full)

    log = [json.loads(line) for line in (tmp_path / "full" / LOG).read_text().splitlines()]
    lr = ARCH_DEFAULTS["sngan"]["lr"]
    for rec in log:  # linear decay to zero over the run, one scheduler step per G step
        assert rec["lr_g"] == pytest.approx(lr * (1 - rec["step"] / 4))
        assert rec["images_per_s"] == pytest.approx(4 * 2 / rec["step_time"])


def _run_child(out: Path, data: Path, steps: int, ckpt_every: int, delay: float) -> subprocess.Popen:
    """Start a training subprocess whose steps are slowed by ``delay`` s so it can be killed mid-run."""
    code = textwrap.dedent(f"""
        import time, torch
        torch.set_num_threads({torch.get_num_threads()})  # same reduction order as this process
        import gans.losses as L
        from tests_child_cfg import cfg
        orig = L.d_loss
        def slow(*a, **k):
            time.sleep({delay})
            return orig(*a, **k)
        L.d_loss = slow
        from gans.training import train
        train(cfg(steps={steps}, ckpt_every={ckpt_every}), torch.load({str(data)!r}, weights_only=True), {str(out)!r}, resume=True)
    """)
    helper = out.parent / "tests_child_cfg.py"
    helper.write_text(textwrap.dedent("""
        from gans.training import TrainConfig
        def cfg(**kw):
            base = dict(arch="dcgan", upsampler="bilinear", resolution=32, steps=6, batch_size=4, width=4,
                        spectral_d=True, spectral_reg=0.1, ema=0.9, ckpt_every=2, sample_every=0,
                        log_every=1, lr_decay="linear", device="cpu")
            base.update(kw)
            return TrainConfig(**base)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{out.parent}{os.pathsep}{REPO}"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path, min_step: int, timeout: float = 120) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"child ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if ckpt.is_file():
            step = load_checkpoint(ckpt)["step"]
            if step >= min_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return step
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("child wrote no checkpoint in time")


def test_sigkill_mid_run_then_resume_matches_uninterrupted(images, reference, tmp_path):
    data = tmp_path / "images.pt"
    torch.save(images, data)
    out = tmp_path / "run"
    proc = _run_child(out, data, steps=6, ckpt_every=2, delay=0.4)
    killed_at = _kill_after_checkpoint(proc, out / CHECKPOINT, min_step=2)
    assert killed_at < 6
    # The killed run may leave a temp file beside the checkpoint; resume must cope.
    (out / ".checkpoint.pt.leftover.tmp").write_bytes(b"partial")
    train(tiny(), images, out, resume=True)
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    assert_same_networks(load_checkpoint(out / CHECKPOINT), reference)


@pytest.mark.slow
def test_repeated_sigkill_then_resume_matches_uninterrupted(images, reference, tmp_path):
    data = tmp_path / "images.pt"
    torch.save(images, data)
    out = tmp_path / "run"
    last = 0
    while last < 5:
        proc = _run_child(out, data, steps=6, ckpt_every=1, delay=0.5)
        last = _kill_after_checkpoint(proc, out / CHECKPOINT, min_step=last + 1)
    train(tiny(), images, out, resume=True)
    assert_same_networks(load_checkpoint(out / CHECKPOINT), reference)


def test_resume_with_another_arch_or_upsampler_names_both(images, tmp_path):
    train(tiny(steps=1, spectral_d=False, spectral_reg=0.0, ema=None), images, tmp_path)
    with pytest.raises(ValueError) as e:
        Trainer(tiny(arch="sngan", steps=2), images, tmp_path, resume=True)
    assert "dcgan" in str(e.value) and "sngan" in str(e.value)
    with pytest.raises(ValueError) as e:
        Trainer(tiny(upsampler="nearest", steps=2), images, tmp_path, resume=True)
    assert "'bilinear'" in str(e.value) and "'nearest'" in str(e.value)


def test_resume_of_a_finished_run_changes_nothing(images, reference, tmp_path):
    train(tiny(steps=2, spectral_d=False, spectral_reg=0.0, ema=None), images, tmp_path)
    before = (tmp_path / CHECKPOINT).read_bytes()
    train(tiny(steps=2, spectral_d=False, spectral_reg=0.0, ema=None), images, tmp_path, resume=True)
    assert (tmp_path / CHECKPOINT).read_bytes() == before


# ----------------------------------------------------------------------------- failures
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(images, tmp_path, monkeypatch):
    real_g_loss = gans.losses.g_loss
    calls = {"n": 0}

    def g_loss_nan_at_step_3(name, logits):
        calls["n"] += 1
        loss = real_g_loss(name, logits)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(gans.losses, "g_loss", g_loss_nan_at_step_3)
    cfg = tiny(spectral_d=False, spectral_reg=0.0, ckpt_every=2, steps=6)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, images, tmp_path)
    msg = str(e.value)
    assert "step 3" in msg and "loss_g" in msg and "nan" in msg and "step 2" in msg
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())
    assert [json.loads(x)["step"] for x in (tmp_path / LOG).read_text().splitlines()] == [1, 2]


# ----------------------------------------------------------------------------- outputs
def test_generator_loss_mixes_image_and_spectral_critics(images, tmp_path):
    w, reg = 0.3, 0.2
    train(tiny(steps=2, spectral_d_weight=w, spectral_reg=reg, ema=None), images, tmp_path)
    for rec in map(json.loads, (tmp_path / LOG).read_text().splitlines()):
        expected = (1 - w) * rec["loss_g_image"] + w * rec["loss_g_spectral"] + reg * rec["loss_spectral_reg"]
        assert rec["loss_g"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert all(math.isfinite(rec[k]) for k in ("loss_d", "loss_sd"))


def test_ema_starts_from_ramped_decay(images, tmp_path):
    tr = Trainer(tiny(spectral_d=False, spectral_reg=0.0, ema=0.99), images, tmp_path)
    g0 = {k: v.clone() for k, v in tr.G.named_parameters()}
    tr.train_step()
    # First update uses decay min(0.99, 1/10) = 0.1: ema = 0.1 * init + 0.9 * new weights.
    for k, v in tr.G_ema.named_parameters():
        assert torch.allclose(v, 0.1 * g0[k] + 0.9 * dict(tr.G.named_parameters())[k], atol=1e-7)


def test_spectral_d_follows_the_learning_rate_schedule_and_is_checkpointed(images, tmp_path):
    tr = Trainer(tiny(steps=4), images, tmp_path)
    for k in range(1, 3):
        tr.train_step()
        tr.step += 1
        expected = tr.cfg.lr * (1 - k / 4)
        lrs = [opt.param_groups[0]["lr"] for opt in (tr.opt_G, tr.opt_D, tr.opt_SD)]
        assert lrs == pytest.approx([expected] * 3)
    state = tr.state_dict()
    assert state["sched_SD"]["last_epoch"] == 2 and state["sched_SD"] == state["sched_G"] | {
        "base_lrs": state["sched_SD"]["base_lrs"]}
    tr.save()
    resumed = Trainer(tiny(steps=4), images, tmp_path, resume=True)
    assert resumed.opt_SD.param_groups[0]["lr"] == pytest.approx(tr.cfg.lr * 0.5)
    assert resumed.sched_SD.state_dict()["last_epoch"] == 2


def _bn_buffers(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if "running" in k}


def test_ema_with_decay_zero_samples_like_the_online_generator(images, tmp_path):
    import copy

    from gans.ema import standing_bn_statistics

    tr = Trainer(tiny(spectral_d=False, spectral_reg=0.0, ema=0.9), images, tmp_path)
    tr.cfg.ema = 0.0  # decay 0: the EMA weights are the online weights after every step
    for _ in range(3):
        tr.train_step()
        tr.step += 1
    tr.save()
    online = copy.deepcopy(tr.G)
    z = torch.randn(8, tr.z_dim)
    for (k, v), (_, ve) in zip(online.named_parameters(), tr.G_ema.named_parameters(), strict=True):
        assert torch.equal(v, ve), k
    # Sampled in eval mode, the EMA generator equals the online generator with standing
    # statistics of its own weights -- not normalised by the online run's running averages.
    standing_bn_statistics(online, tr.standing_z)
    with torch.no_grad():
        assert torch.equal(tr.G_ema.eval()(z), online.eval()(z))
        # ... and those running averages would give other images (what the copy used to do).
        assert not torch.allclose(tr.G_ema(z), tr.G.eval()(z), atol=1e-3)
    tr.G.train()


def test_ema_batchnorm_statistics_are_its_own(images, tmp_path):
    import copy

    from gans.ema import standing_bn_statistics

    tr = Trainer(tiny(spectral_d=False, spectral_reg=0.0, ema=0.9, ckpt_every=0), images, tmp_path)
    for _ in range(4):
        tr.train_step()
        tr.step += 1
    tr.save()
    ema, online = _bn_buffers(tr.G_ema), _bn_buffers(tr.G)
    assert ema.keys() == online.keys() and ema
    for k in ema:
        if k.endswith("running_mean") or k.endswith("running_var"):
            assert not torch.allclose(ema[k], online[k]), k
    # Equal to a direct recomputation: reset, then the plain average of the batch mean and
    # unbiased variance over the fixed latent batches, layer by layer.
    again = standing_bn_statistics(copy.deepcopy(tr.G_ema), tr.standing_z)
    for k, v in _bn_buffers(again).items():
        assert torch.equal(v, ema[k]), k
    first_bn = tr.G_ema.project[2]
    acts = [tr.G_ema.project[:2](z) for z in tr.standing_z]
    with torch.no_grad():
        mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in acts]).mean(0)
        var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in acts]).mean(0)
    assert torch.allclose(first_bn.running_mean, mean, atol=1e-6)
    assert torch.allclose(first_bn.running_var, var, rtol=1e-5)
    # The checkpoint holds the EMA generator's own statistics.
    saved = load_checkpoint(tmp_path / CHECKPOINT)["G_ema"]
    for k, v in ema.items():
        assert torch.equal(saved[k], v)


def test_run_folder_outputs(images, tmp_path):
    cfg = tiny(steps=2, sample_every=1, ckpt_every=0, spectral_d=False, spectral_reg=0.0)
    train(cfg, images, tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text()) == cfg.resolved().to_dict()
    grids = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert grids == ["step_000001.png", "step_000002.png"]
    with Image.open(tmp_path / "samples" / grids[0]) as im:
        assert im.size == (8 * (32 + 2) + 2,) * 2  # make_grid: 8 x 8 images with 2 px padding
    # Only tensors and primitives: plain torch.load with weights_only=True reads it.
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["step"] == 2 and state["config"]["arch"] == "dcgan"


# ----------------------------------------------------------------------------- checkpoint files
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": "forgelab-gan-checkpoint", "config": {}, "x": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="could run code") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists() and "\n" not in str(e.value)
    with open(tmp_path / "evil.pkl", "wb") as f:  # a bare pickle, not a torch zip file
        pickle.dump(_RunsCode(marker), f, protocol=2)
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_get_one_sentence(tmp_path):
    path = save_checkpoint({"config": {"arch": "dcgan"}, "w": torch.arange(1000.0)}, tmp_path / "c.pt")
    assert load_checkpoint(path)["w"].sum() == 999 * 1000 / 2
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is damaged or incomplete"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a forgelab GAN checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_of_another_arch_give_a_message_naming_both():
    sngan_g = build_generator("sngan", 32, "nearest", width=4)
    dcgan_state = build_generator("dcgan", 32, "nearest", width=4).state_dict()
    with pytest.raises(ValueError) as e:
        load_module_state(sngan_g, dcgan_state, path="run/checkpoint.pt", saved_arch="dcgan",
                          wanted_arch="sngan", role="generator")
    msg = str(e.value)
    assert "(dcgan)" in msg and "sngan generator" in msg and "\n" not in msg


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]

"""The CUDA branches, checked on the CPU (issue 19): each test fails on the code before the fix.

How a GPU is stood in for:

* ``FakeTensorMode`` tensors on ``torch.device("cuda")`` carry shapes, dtypes and devices but
  no data, so a CPU tensor meeting a CUDA one (a cached matrix built on the wrong device, a
  constant made on the host) raises as on a GPU. Features, losses and a generator forward run
  this way below, as does CUDA autocast (with ``torch.cuda.is_available`` patched so that
  autocast switches on), which is how the spectral norm's dtypes are checked.
* What does not work with fake CUDA tensors, and why: **backward passes** (the autograd engine
  asks the CUDA driver for the device's primary context: "hasPrimaryContext expects a valid
  device index"); **pinned memory and non_blocking copies** (``pin_memory`` needs the CUDA
  host allocator); **streams, events and ``set_sync_debug_mode``** (driver calls), so the count
  of host-device waits is a ``benchmarks/gpu_check.py`` row on a real GPU, and here the loop's
  logic is checked instead (flags read only on due steps); **NCCL**; and numbers of any kind
  (fake tensors have none), so numeric equalities run on CPU tensors.
* Device properties (compute capability, device count) are patched where a choice depends on them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import smooth_images
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode

from detectors import features as feats
from detectors.neural_training import amp_policy, predict_outputs, train_network
from gans import distributed, losses
from gans.ema import update_ema
from gans.networks import build_discriminator, build_generator
from gans.run_edges import optimizer_to
from gans.sampling import (
    FORWARD_CHUNK,
    chunk_for_memory,
    forward_chunk,
    generate_tensor,
    latents,
    to_uint8,
)
from gans.sngan import spectral_norm as fp32_spectral_norm
from gans.training import TrainConfig, Trainer, TrainingDiverged
from pipelines.study import executors
from plumbing import devices
from plumbing.determinism import deterministic_mode

REPO = Path(__file__).resolve().parents[1]


class DtypeLog(TorchDispatchMode):
    """Records (op name, output dtype) of every aten op dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.ops.append((func.__name__.split(".")[0], out.dtype))
        return out


def _host_built(cached, mode: FakeTensorMode):
    """A cached constant builder whose host-side part runs on real CPU tensors, then moves to the device.

    That is what happens on a GPU; inside FakeTensorMode the host part would be fake too, and
    its data-dependent steps (``int(idx.max())``) cannot run on tensors without data.
    """
    def build(*args):
        *head, device, dtype = args
        with unset_fake_temporarily(), torch.device("cpu"):
            m = cached.__wrapped__(*head, "cpu", dtype)
        return mode.from_tensor(m).to(device)
    return build


def fake_cuda_module(module: nn.Module) -> nn.Module:
    """``module`` (built on the CPU) with fake CUDA copies of its parameters and buffers.

    Call inside :func:`fake_cuda`. ``module.to("cuda")`` cannot do it: it swaps tensors in
    place, which parametrizations (spectral norm) refuse for fake tensors, and building a
    network inside fake mode fails at ``torch.tensor(...)`` constants (BatchNorm's counter).
    """
    mode = torch._guards.detect_fake_mode()
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(mode.from_tensor(p.detach()).to("cuda"), p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = mode.from_tensor(b).to("cuda")
    return module


@contextlib.contextmanager
def fake_cuda():
    """Fake tensors, CUDA as the default device, and torch believing a bf16-capable GPU is there."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, torch.device("cuda"), \
            mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.is_bf16_supported", return_value=True), \
            mock.patch.object(feats, "_ring_matrix", _host_built(feats._ring_matrix, mode)):
        yield
    # Caches keyed by device must not keep fake tensors for later (real) calls.
    feats._ring_matrix.cache_clear()
    feats._luma_weights.cache_clear()
    feats.dct_matrix.cache_clear()


# ------------------------------------------------------------------ fake CUDA tensors: devices


def test_features_and_losses_stay_on_a_fake_cuda_device():
    with fake_cuda():
        images = torch.empty(4, 3, 32, 32, dtype=torch.uint8)
        for name in ("radial", "xy", "dct", "npr", "fingerprint"):
            out = feats.extract(name, images)
            assert out.device.type == "cuda" and out.shape[0] == 4, name
        scores = torch.empty(4, 1)
        for kind in ("hinge", "bce"):
            assert losses.d_loss(kind, scores, scores).device.type == "cuda"
            assert losses.g_loss(kind, scores).device.type == "cuda"
        # The mode does catch a mismatch: a CPU tensor meeting a CUDA one raises, as on a GPU.
        with pytest.raises(RuntimeError, match="device"):
            torch.ones(3) + torch.ones(3, device="cpu")


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_generator_and_discriminator_forward_on_a_fake_cuda_device(arch):
    G = build_generator(arch, 32, "nearest", width=4)
    D = build_discriminator(arch, 32, width=4)
    with fake_cuda():
        G, D = fake_cuda_module(G), fake_cuda_module(D)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            x = G(torch.empty(2, G.z_dim))
            y = D(x)
        assert x.device.type == y.device.type == "cuda" and x.shape == (2, 3, 32, 32)
        assert x.dtype == torch.bfloat16 or arch == "dcgan"  # autocast really switched on


def test_spectral_norm_power_iteration_runs_in_float32_under_cuda_autocast():
    # Under CUDA autocast torch's own spectral norm ran its mv in bf16 (sigma to ~3 digits).
    layer = fp32_spectral_norm(nn.Conv2d(8, 8, 3))
    with fake_cuda():
        fake_cuda_module(layer)
        with torch.autocast("cuda", dtype=torch.bfloat16), DtypeLog() as log:
            layer(torch.empty(2, 8, 6, 6))
    power = [dt for op, dt in log.ops if op in ("mv", "vdot", "dot")]
    assert power and all(dt == torch.float32 for dt in power)
    assert ("convolution", torch.bfloat16) in log.ops  # the layer itself still runs in bf16


@torch.no_grad()
def test_spectral_norm_sigma_under_cpu_bf16_autocast_equals_float32():
    torch.manual_seed(0)
    layer = fp32_spectral_norm(nn.Conv2d(16, 32, 3))
    twin = copy.deepcopy(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w_amp = layer.weight
    w_ref = twin.weight
    original = layer.parametrizations.weight.original
    sigma_amp = (original / w_amp).flatten()[0]
    sigma_ref = (original / w_ref).flatten()[0]
    assert w_amp.dtype == torch.float32
    assert abs(float(sigma_amp) - float(sigma_ref)) <= 1e-5 * float(sigma_ref)
    # And it is the largest singular value (power iteration converged from its stored u, v).
    for _ in range(50):
        twin.weight  # noqa: B018  (each access in training mode runs one power iteration)
    sv = torch.linalg.matrix_norm(original.reshape(32, -1), ord=2)
    assert float((original / twin.weight).flatten()[0]) == pytest.approx(float(sv), rel=1e-4)


def test_spectral_norm_keeps_torchs_state_dict_keys():
    ours = fp32_spectral_norm(nn.Linear(4, 3)).state_dict()
    theirs = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3)).state_dict()
    assert ours.keys() == theirs.keys()


# ------------------------------------------------------------------ autocast on the device's type


def _record_dtypes(module: nn.Module, seen: list[torch.dtype]) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))


def test_gan_training_autocasts_on_the_cpu_when_amp_is_on(tmp_path):
    cfg = TrainConfig(arch="sngan", upsampler="nearest", resolution=32, batch_size=4, width=4, steps=2,
                      device="cpu", ckpt_every=0, sample_every=0, log_every=0)
    tr = Trainer(cfg, smooth_images(8, 32, seed=0), tmp_path)
    assert tr.amp is False  # amp stays a CUDA default ...
    tr.amp = True  # ... but the autocast path itself follows the device
    seen: list[torch.dtype] = []
    _record_dtypes(tr.D, seen)
    out = tr.train_step()
    assert torch.bfloat16 in seen
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _xy(n: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    X = smooth_images(n, 8, seed=1)
    return X, np.arange(n) % 2


def _pixels(batch: torch.Tensor, _gen: torch.Generator | None) -> torch.Tensor:
    return batch.float() / 255


def _ce(net: nn.Module, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(net(f).float(), y)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_detector_training_autocasts_on_the_cpu(amp):
    torch.manual_seed(0)
    net = _tiny_net()
    seen: list[torch.dtype] = []
    _record_dtypes(net, seen)
    X, y = _xy()
    history, _ = train_network(net, X, y, features=_pixels, loss=_ce, epochs=2, batch_size=8, lr=1e-2,
                               weight_decay=0.0, amp=amp, generator=torch.Generator().manual_seed(0),
                               device=torch.device("cpu"))
    assert {"bf16": torch.bfloat16, "fp16": torch.float16}[amp] in seen
    assert all(np.isfinite(h["loss"]) for h in history)


def test_detector_inference_is_float32_whatever_amp_says():
    torch.manual_seed(0)
    net = _tiny_net()
    X, _ = _xy()
    kw = {"features": _pixels, "outputs": lambda n, f: n(f), "batch_size": 8, "device": torch.device("cpu"),
          "input_shape": (3, 8, 8)}
    np.testing.assert_array_equal(predict_outputs(net, X, amp="bf16", **kw), predict_outputs(net, X, amp=False, **kw))


def test_amp_dtype_asks_the_given_device_not_the_current_one(monkeypatch):
    capability = {0: (8, 0), 1: (7, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: capability[torch.device(d).index])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on pre-Ampere too
    assert devices.amp_dtype(torch.device("cuda", 0)) == torch.bfloat16
    assert devices.amp_dtype(torch.device("cuda", 1)) == torch.float16  # V100-class: fp16 + GradScaler
    assert amp_policy(True, torch.device("cuda", 1)) == torch.float16
    assert amp_policy(True, torch.device("cpu")) is None  # amp=True stays a CUDA default
    assert amp_policy("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown amp 'int8'"):
        amp_policy("int8", torch.device("cpu"))


# ------------------------------------------------------------------ no host-device waits per step


def test_luma_weights_are_built_once_per_device_and_dtype():
    feats._luma_weights.cache_clear()
    images = smooth_images(4, 16, seed=0)
    for _ in range(3):
        feats.grayscale(images)
    info = feats._luma_weights.cache_info()
    assert info.misses == 1 and info.hits == 2


def test_on_cuda_the_loop_reads_its_flags_only_on_due_steps(tmp_path, monkeypatch):
    cfg = TrainConfig(arch="dcgan", upsampler="nearest", resolution=32, batch_size=4, width=4, steps=10,
                      device="cpu", ckpt_every=0, sample_every=0, log_every=4)
    tr = Trainer(cfg, smooth_images(8, 32, seed=0), tmp_path)
    reads: list[int] = []
    real_any_rank = distributed.any_rank

    def counting(flags, info):
        reads.append(tr.step)
        return real_any_rank(flags, info)

    monkeypatch.setattr(distributed, "any_rank", counting)
    tr.device = torch.device("cuda")  # only its type is asked in _check_step
    tr._last_saved = -1  # as the loop's start sets it
    stop = SimpleNamespace(requested=False)
    finite = {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(1.0)}
    for step in range(1, 4):
        tr.step = step
        assert tr._check_step(finite, stop) is False
    assert reads == []  # steps 1-3: nothing read, nothing waited for
    tr.step = 3
    tr._check_step({"loss_d": torch.tensor(float("nan")), "loss_g": torch.tensor(1.0)}, stop)  # not due: kept
    tr.step = 4
    with pytest.raises(TrainingDiverged, match="diverged at step 4"):
        tr._check_step(finite, stop)  # due (log step): the remembered NaN stops the run
    assert reads == [4]
    tr.device = torch.device("cpu")
    tr._nonfinite = None
    tr.step = 5
    assert tr._check_step(finite, stop) is False and reads == [4, 5]  # on the CPU every step (no wait there)


def test_to_device_copies_through_pinned_memory_to_cuda():
    calls: list[str] = []
    x = torch.zeros(3)
    pinned = SimpleNamespace(to=lambda dev, non_blocking=False: calls.append(f"to {dev} {non_blocking}") or "gpu")
    with mock.patch.object(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or pinned):
        assert devices.to_device(x, torch.device("cuda", 0)) == "gpu"
    assert calls == ["pin", "to cuda:0 True"]
    assert devices.to_device(x, torch.device("cpu")) is x


# ------------------------------------------------------------------ EMA and Adam


def test_ema_update_equals_the_per_parameter_reference():
    torch.manual_seed(0)
    online = build_generator("sngan", 32, "nearest", width=4)
    ema = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    reference = copy.deepcopy(ema)
    with torch.no_grad():
        for pe, p in zip(reference.parameters(), online.parameters(), strict=True):
            pe.lerp_(p, 1 - 0.999)  # the per-parameter update (one kernel each)
    update_ema(ema, online, 0.999)
    for a, b in zip(ema.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    with mock.patch.object(torch, "_foreach_lerp_", wraps=torch._foreach_lerp_) as foreach:
        update_ema(ema, online, 0.9)
    assert foreach.call_count == 1  # one multi-tensor call, not one per parameter


def test_fused_adam_is_chosen_on_cuda_only(monkeypatch):
    assert devices.fused_adam(torch.device("cpu")) is False
    assert devices.fused_adam(torch.device("cuda", 0)) is True
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    optimizer_to(opt, torch.device("cpu"))
    assert not opt.param_groups[0]["fused"]  # the CPU path is as it was
    assert opt.state[net.weight]["step"].device.type == "cpu"
    # A CUDA run's choice: fused, step counters on the parameters' device (the CPU stands in here).
    monkeypatch.setattr("gans.run_edges.fused_adam", lambda dev: True)
    optimizer_to(opt, torch.device("cpu"))
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["foreach"] is None
    assert opt.state[net.weight]["step"].dtype == torch.float32
    opt.step()  # and the fused kernel runs with that state


# ------------------------------------------------------------------ torchrun ranks and torch-fidelity


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_cuda_n_under_torchrun_is_the_local_rank_or_an_error(four_gpus, monkeypatch):
    rank1 = distributed.DistInfo(rank=1, world_size=2, local_rank=1)
    assert distributed.rank_device("cuda", rank1) == torch.device("cuda", 1)
    assert distributed.rank_device("cuda:1", rank1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="would put every torchrun rank on GPU 0.*CUDA_VISIBLE_DEVICES"):
        distributed.rank_device("cuda:0", rank1)
    assert distributed.rank_device("cuda:3", distributed.DistInfo()) == torch.device("cuda", 3)  # one process
    # Through init_distributed, as torchrun's rank 1 would call it (the process group is mocked).
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    joined = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: joined.append((backend, kw)))
    info, dev, created = distributed.init_distributed("cuda")
    assert dev == torch.device("cuda", 1) and created and joined[0][0] == "nccl"
    monkeypatch.setenv("FORGELAB_DIST_BACKEND", "gloo")
    distributed.init_distributed("cuda")
    assert joined[1] == ("gloo", {"rank": 1, "world_size": 2})


def test_fid_runs_on_the_asked_gpu(monkeypatch):
    from pipelines.evaluation import quality
    current = ["cuda:0"]

    @contextlib.contextmanager
    def cuda_device(dev):
        before, current[0] = current[0], str(dev)
        yield
        current[0] = before

    seen = {}

    def calculate(extractor, weights, **kwargs):
        seen.update(cuda=kwargs["cuda"], device=current[0])
        return {"frechet_inception_distance": 1.0}

    monkeypatch.setattr(quality, "resolve_device", lambda d: torch.device("cuda", 2))
    monkeypatch.setattr(torch.cuda, "device", cuda_device)
    monkeypatch.setattr(quality, "_calculate", calculate)
    images = smooth_images(4, 32, seed=0)
    out = quality.quality_metrics(images, images, fid=True, kid=False, spectral=False, cache=False,
                                  device="cuda:2")
    assert seen == {"cuda": True, "device": "cuda:2"} and out["fid"] == 1.0
    assert current[0] == "cuda:0"  # restored after


# ------------------------------------------------------------------ Ray


def test_gpu_steps_go_through_a_remote_function_with_max_calls_1():
    class FakeRay:
        def remote(self, **options):
            return lambda fn: SimpleNamespace(options=options, fn=fn)

    remotes = executors.step_remotes(FakeRay())
    gpu_step = SimpleNamespace(resources={"num_cpus": 1, "num_gpus": 1})
    cpu_step = SimpleNamespace(resources={"num_cpus": 1})
    chosen = executors.remote_for(gpu_step, remotes)
    assert chosen.options["max_calls"] == 1 and chosen.options["num_gpus"] == 1  # both in the decorator
    assert "max_calls" not in executors.remote_for(cpu_step, remotes).options  # CPU workers are reused
    assert chosen.fn is executors._task


# ------------------------------------------------------------------ generation


def test_forward_chunks_are_sized_by_memory_on_a_gpu_and_fixed_on_the_cpu():
    mib = 2**20
    assert chunk_for_memory(1 * mib, 80 * 1024 * mib * 0.25) == 8192  # capped
    assert chunk_for_memory(1 * mib, 600 * mib) == 512  # 512 x 1 MiB <= 600 MiB < 1024 x 1 MiB
    assert chunk_for_memory(100 * mib, 1 * mib) == FORWARD_CHUNK  # never below the CPU's chunk
    G = build_generator("dcgan", 32, "nearest", width=4)
    assert forward_chunk(G, torch.device("cpu")) == FORWARD_CHUNK


def test_cpu_bytes_are_those_of_128_latent_forwards():
    # The reference: each run of 128 latents (the last one padded) through G in eval mode.
    torch.manual_seed(3)
    G = build_generator("dcgan", 32, "bilinear", width=4).eval()
    n = 300
    z = latents(7, range(n), G.z_dim)
    z = torch.cat([z, z.new_zeros(3 * 128 - n, G.z_dim)])
    with torch.no_grad():
        ref = torch.cat([to_uint8(G(c)) for c in z.split(128)])[:n]
    assert torch.equal(generate_tensor(G, n, seed=7, batch_size=50), ref)
    with deterministic_mode():
        assert torch.equal(generate_tensor(G, n, seed=7, batch_size=50, deterministic=True), ref)


def test_deterministic_mode_sets_and_restores_the_flags():
    def flags():
        return (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                torch.backends.cuda.matmul.allow_tf32, torch.are_deterministic_algorithms_enabled())

    before = flags()
    with deterministic_mode():
        assert flags() == (True, False, False, False, True)
    assert flags() == before


def test_generate_command_deterministic_switch(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    cfg = TrainConfig(arch="dcgan", upsampler="nearest", resolution=32, batch_size=4, width=4, steps=1,
                      device="cpu", ckpt_every=0, sample_every=0, log_every=0)
    Trainer(cfg, smooth_images(8, 32, seed=0), tmp_path / "run").run()
    runner = CliRunner()
    for name, extra in (("plain", []), ("det", ["--deterministic"])):
        result = runner.invoke(app, ["generate", str(tmp_path / "run"), "--n", "6", "--out", str(tmp_path / name),
                                     "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
    manifests = [json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("plain", "det")]
    assert [m["deterministic"] for m in manifests] == [False, True]
    assert manifests[1]["forward_chunk"] == FORWARD_CHUNK
    for i in range(6):  # the CPU's bytes are the same either way
        assert (tmp_path / "plain" / f"{i:06d}.png").read_bytes() == (tmp_path / "det" / f"{i:06d}.png").read_bytes()


# ------------------------------------------------------------------ the acceptance script


def _gpu_check(folder: Path, only: str) -> list[dict]:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--only", only, "--json", "--out", str(folder)], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("\n[") + 1 :])


def test_gpu_check_quick_passes_every_row_on_the_cpu(tmp_path):
    rows = _gpu_check(tmp_path, "train,syncs,ddp,generate,features,quickstart")
    assert {r["check"] for r in rows} == {"train", "syncs", "ddp", "generate", "features", "quickstart"}
    assert all(r["ok"] for r in rows) and not any(r["met"] is False for r in rows)
    ddp = next(r for r in rows if r["check"] == "ddp")
    assert ddp["value"] == "identical" and ddp["what"] == "2 gloo processes on the CPU"
    syncs = next(r for r in rows if r["check"] == "syncs")
    assert syncs["gpu"] and syncs["target"] == "needs GPU"  # the table says what needs a GPU
    assert any(r["target"].endswith("needs GPU") for r in rows if r["check"] == "generate")


@pytest.mark.slow
def test_gpu_check_quick_ray_row_passes_on_the_cpu(tmp_path):
    # Slow only for Ray's start-up (5-50 s on a busy 2-core machine).
    (ray_row,) = _gpu_check(tmp_path, "ray")
    assert ray_row["check"] == "ray" and ray_row["ok"]


# ------------------------------------------------------------------ the study's device in the transfer step


def _sources(n: int = 30):
    from pipelines.data.images import ImageSet

    def image_set(images, name):
        return ImageSet(images, [f"{name}/{i}" for i in range(len(images))], source=name)

    fake = smooth_images(n, 32, seed=2)
    fake[:, :, ::2, ::2] = 0  # a grid the radial profile sees
    return image_set(smooth_images(n, 32, seed=1), "real"), {"grid": image_set(fake, "grid")}


def _cell_hashes(folder: Path) -> set[str]:
    return {json.loads(p.read_text())["config_hash"] for p in (folder / "cells").rglob("*.json")}


def test_transfer_gives_every_detector_the_device_and_hashes_it(tmp_path, monkeypatch):
    from pipelines.evaluation import transfer
    real, fakes = _sources()
    made: list[str] = []
    real_detector = transfer.Detector

    def recording(spec, **kw):
        made.append(kw.get("device"))
        return real_detector(spec, **kw)

    from pipelines.evaluation import protocol
    # Matrix rows are fitted by the shared protocol; attribution models by transfer itself.
    monkeypatch.setattr(protocol, "Detector", recording)
    monkeypatch.setattr(transfer, "Detector", recording)
    transfer.run_transfer(real, fakes, ["radial:lr"], tmp_path / "cpu", device="cpu", heatmaps=False)
    assert made == ["cpu"]
    transfer.run_transfer(real, fakes, ["radial:lr"], tmp_path / "unset", heatmaps=False)
    assert _cell_hashes(tmp_path / "cpu") and _cell_hashes(tmp_path / "cpu").isdisjoint(_cell_hashes(tmp_path / "unset"))
    # A detector's own device option wins over the study's.
    transfer.run_transfer(real, fakes, ["radial:lr"], tmp_path / "own", device="cuda", heatmaps=False,
                          detector_options={"radial:lr": {"device": "cpu"}})
    assert made[-1] == "cpu"


def test_transfer_worker_processes_get_the_device(tmp_path, monkeypatch):
    from pipelines.evaluation import transfer
    real, fakes = _sources()
    shipped = []

    def capture(cells, compute, key, label, **kw):
        assert kw["jobs"] == 2
        shipped.extend(cells)  # what is pickled to the worker processes
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer, "run_cells", capture)
    with pytest.raises(KeyboardInterrupt):
        transfer.run_transfer(real, fakes, ["radial:lr", "xy:lr"], tmp_path, device="cuda", jobs=2, heatmaps=False)
    assert len(shipped) == 2 and all(c.options["device"] == "cuda" for c in shipped)


def _study(device: str):
    from pipelines.study.config import parse_config

    return parse_config({
        "study": {"name": "t", "seed": 0, "resolution": 32, "data": "embedded", "n_real": 32, "device": device},
        "train": {"steps": 1, "batch_size": 8, "width": 4, "z_dim": 8},
        "grid": {"upsamplers": ["nearest"]},
        "generate": {"n": 20, "batch_size": 20, "grid": 4},
        "transfer": {"detectors": ["radial:lr"], "jobs": 2},
    })


def test_study_transfer_step_hashes_the_device_and_asks_for_a_gpu(tmp_path, monkeypatch):
    from pipelines.study import run as study
    real, _ = _sources()
    steps = {s.key: s for s in study.build_steps(_study("cpu"), tmp_path, real, "data", False)}
    assert steps["transfer"].inputs["device"] == "cpu" and "num_gpus" not in steps["transfer"].resources
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = {s.key: s for s in study.build_steps(_study("cuda"), tmp_path, real, "data", False)}
    assert gpu["transfer"].hash != steps["transfer"].hash  # CPU and GPU matrices never mix
    assert gpu["transfer"].resources == {"num_cpus": 2, "num_gpus": 1}  # Ray gives the step its GPU
    assert study.detector_device("auto") == "cuda" and study.detector_device("cuda:1") == "cuda:1"


def test_study_transfer_step_passes_the_device_to_run_transfer(tmp_path, monkeypatch):
    from pipelines.study import run as study
    real, fakes = _sources()
    seen = {}
    monkeypatch.setattr(study, "load_fakes", lambda out, name: fakes["grid"].images)
    monkeypatch.setattr(study, "run_transfer", lambda *a, **kw: seen.update(kw))
    study._transfer_step(_study("cpu"), tmp_path, real, False, False)
    assert seen["device"] == "cpu"

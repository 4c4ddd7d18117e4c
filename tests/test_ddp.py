"""DistributedDataParallel on CPU: two gloo ranks see different data and end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from conftest import smooth_images

from gans.checkpoint import load_checkpoint
from gans.run_edges import unwrap
from gans.training import CHECKPOINT, LOG, TrainConfig, Trainer

WORLD = 2
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def network_state(tr: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """Weights and buffers of every network (what two runs must agree on to be the same)."""
    nets = {"G": unwrap(tr.G), "D": unwrap(tr.D), "SD": unwrap(tr.SD), "G_ema": tr.G_ema}
    return {k: {n: t.detach().cpu().clone() for n, t in m.state_dict().items()}
            for k, m in nets.items() if m is not None}


def _worker(rank: int, port: int, out: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = TrainConfig(arch="dcgan", upsampler="nearest", steps=STEPS, batch_size=8, width=4, spectral_d=True,
                      ema=0.9, ckpt_every=2, sample_every=0, log_every=1, device="cpu")
    tr = Trainer(cfg, smooth_images(24, 32, seed=4), out)
    init = {k: v.detach().clone() for k, v in tr.G.module.state_dict().items()}
    seen: list[list[int]] = []
    take = tr.next_indices

    def record() -> torch.Tensor:
        idx = take()
        seen.append(idx.tolist())
        return idx

    tr.next_indices = record
    tr.run()
    torch.save({"nets": network_state(tr), "init": init, "seen": seen, "local_batch": tr.local_batch},
               Path(out) / f"rank{rank}.pt")


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # The global batch of 8 is split 4 + 4, and the ranks' shards are disjoint at every step.
    assert r0["local_batch"] == r1["local_batch"] == 4
    assert len(r0["seen"]) == len(r1["seen"]) == STEPS
    for a, b in zip(r0["seen"], r1["seen"], strict=True):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
    # Identical weights and buffers (BatchNorm statistics included) on both ranks ...
    for net in ("G", "D", "SD", "G_ema"):
        assert r0["nets"][net].keys() == r1["nets"][net].keys()
        for k in r0["nets"][net]:
            assert torch.equal(r0["nets"][net][k], r1["nets"][net][k]), f"{net}.{k} differs between ranks"
    # ... that did move away from the initialisation (the ranks trained, on different data).
    assert any(not torch.equal(r0["init"][k], r0["nets"]["G"][k]) for k in r0["init"])
    # Rank 0 alone wrote the checkpoint and the log; the checkpoint holds both latent streams.
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["step"] == STEPS and state["world_size"] == WORLD and len(state["rng"]["z"]) == WORLD
    assert not torch.equal(state["rng"]["z"][0], state["rng"]["z"][1])
    for k, v in state["G"].items():
        assert torch.equal(v, r0["nets"]["G"][k])
    assert len((tmp_path / LOG).read_text().splitlines()) == STEPS

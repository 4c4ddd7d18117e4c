"""Periodic grid peaks in the spectra of untrained generators, per upsampler and with alias-free ReLUs.

An upsampler's checkerboard shows as isolated peaks of the mean power spectrum at the frequencies
of its sampling grids: multiples of 1/8 cycles/px at 32 px (the 4 -> 8 -> 16 -> 32 px layers).
For each kind this builds a DCGAN-32 generator (random initialisation, seed 0, BatchNorm with
batch statistics), generates ``--n`` images, rounds them to uint8 as fake sets are stored, and
reports for every grid frequency ``(a/8, b/8)`` other than DC the mean luma power there over the
mean of the 16 bins at Chebyshev distance 2 around it, in dB; the table gives the largest of these
ratios and the ones at the last layer's Nyquist frequencies. Each image is multiplied by a 2-D
Hann window first: without it the jump between opposite borders of a non-periodic image puts a
cross of power on the spectrum's axes, which reads as peaks at (0, 16) and (16, 0); the window
spreads a true peak over +-1 bin, hence the ring at distance 2. 0 dB: no peak.

    OMP_NUM_THREADS=1 python benchmarks/grid_peaks_at_init.py --n 512
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from detectors.features import grayscale
from gans.networks import build_generator
from gans.sampling import to_uint8

KINDS = (("transposed", False), ("nearest", False), ("bilinear", False), ("bed_of_nails", False),
         ("sinc", False), ("sinc", True), ("transposed", True))


def mean_power(images: torch.Tensor) -> np.ndarray:
    """Mean power spectrum (orthonormal FFT, not centred) of the luma of uint8 images."""
    g = grayscale(images).double()
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    w = torch.hann_window(g.shape[-1], periodic=False, dtype=torch.float64)
    g = g * torch.outer(w, w)
    return (torch.fft.fft2(g, norm="ortho").abs() ** 2).mean(0).numpy()


def grid_peaks(power: np.ndarray, step: int) -> dict[tuple[int, int], float]:
    """dB of power at every grid bin (multiples of ``step`` bins, DC left out) over the mean of the ring at distance 2."""
    n = power.shape[0]
    out = {}
    for a in range(0, n, step):
        for b in range(0, n, step):
            if a == 0 and b == 0:
                continue
            nb = [power[(a + i) % n, (b + j) % n] for i in range(-2, 3) for j in range(-2, 3) if max(abs(i), abs(j)) == 2]
            out[(a, b)] = float(10 * np.log10(power[a, b] / np.mean(nb)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--width", type=int, default=32)
    a = p.parse_args()
    print(f"{'generator':24} {'largest grid peak dB':>21} {'at (a, b)/32':>14} {'Nyquist (16,0)/(0,16)/(16,16) dB':>34}")
    for kind, af in KINDS:
        torch.manual_seed(0)
        g = build_generator("dcgan", 32, kind, width=a.width, alias_free=af).train()
        with torch.no_grad():
            x = to_uint8(g(torch.randn(a.n, g.z_dim, generator=torch.Generator().manual_seed(1))))
        peaks = grid_peaks(mean_power(x), 32 // 8)
        where, top = max(peaks.items(), key=lambda kv: kv[1])
        nyq = " / ".join(f"{peaks[k]:.1f}" for k in ((16, 0), (0, 16), (16, 16)))
        name = kind + (" + alias-free" if af else "")
        print(f"{name:24} {top:>21.1f} {str(where):>14} {nyq:>34}")


if __name__ == "__main__":
    main()

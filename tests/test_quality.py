"""Generator quality through the real torch-fidelity code path, with a tiny registered feature extractor."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from conftest import smooth_images, write_pngs
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from typer.testing import CliRunner

from detectors.fidelity import spectral_fidelity
from pipelines.evaluation import quality
from pipelines.evaluation.quality import UInt8Images, quality_metrics
from plumbing.digests import tensor_digest

TINY = "forgelab-test-tiny"


class TinyFeatures(FeatureExtractorBase):
    """A small fixed random conv net: 16 zero-mean 3x3 filters, |response| pooled to 2x2 -> 64 features.

    High-pass filters make the features respond to added noise the way texture statistics do.
    Counts the images it sees, so that tests can tell whether cached real-set features were used.
    """

    seen = 0

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(0)
        w = torch.randn(16, 3, 3, 3, generator=g)
        self.register_buffer("filters", w - w.mean(dim=(1, 2, 3), keepdim=True))
        self.register_buffer("head", torch.randn(64, 10, generator=g) / 8.0)

    @staticmethod
    def get_provided_features_list():
        return "64", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8  # what torch-fidelity hands every extractor
        TinyFeatures.seen += x.shape[0]
        response = F.conv2d(x.float() / 255.0, self.filters).abs()
        feats = F.adaptive_avg_pool2d(response, 2).flatten(1)
        out = {"64": feats, "logits_unbiased": feats @ self.head}
        return tuple(out[k] for k in self.features_list)


class Payload:
    """An arbitrary class: unpickling it means importing and running this module's code."""


if TINY not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(TINY, TinyFeatures)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Every test gets empty forgelab and torch caches (no downloaded weights are found)."""
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "forgelab-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def noisy(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    """The same images plus one fixed Gaussian noise pattern scaled by ``sigma`` (in grey levels)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g)
    return (images.float() + sigma * noise).round().clamp(0, 255).to(torch.uint8)


def direct(real, fake, **kw):
    """torch_fidelity.calculate_metrics on the same tensors, without forgelab in between."""
    return torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(real), feature_extractor=TINY, cuda=False,
        verbose=False, cache=False, save_cpu_ram=True, **kw,
    )


def test_fid_and_kid_are_zero_for_a_set_against_itself_and_grow_with_noise(real_images):
    fids, kids = [], []
    for sigma in (0.0, 8.0, 24.0, 64.0):
        r = quality_metrics(real_images, noisy(real_images, sigma), fid=True, kid=True, spectral=False,
                            feature_extractor=TINY, device="cpu")
        fids.append(r["fid"])
        kids.append(r["kid"])
    assert abs(fids[0]) < 1e-6 * fids[-1]
    assert fids == sorted(fids) and fids[1] > 0
    # The unbiased MMD estimate of one set against itself is slightly negative, not exactly 0.
    assert abs(kids[0]) < 0.05 * kids[-1]
    assert kids == sorted(kids)
    assert r["feature_extractors"] == {"fid": TINY, "kid": TINY}


def test_numbers_equal_torch_fidelity_called_directly(real_images):
    fake = noisy(smooth_images(48, 32, seed=5), 10.0)
    ours = quality_metrics(real_images, fake, fid=True, kid=True, isc=True, prc=True, spectral=False,
                           feature_extractor=TINY, device="cpu", kid_subset_size=40)
    theirs = direct(real_images, fake, fid=True, kid=True, isc=True, prc=True, kid_subset_size=40)
    for ours_key, their_key in quality.METRIC_NAMES.items():
        assert ours[their_key] == pytest.approx(theirs[ours_key], rel=1e-9, abs=1e-12), their_key
    assert ours["n_real"] == 64 and ours["n_fake"] == 48 and ours["notes"] == []


def test_kid_subset_size_is_clamped_with_a_note(real_images):
    fake = noisy(real_images[:20], 10.0)
    r = quality_metrics(real_images, fake, fid=False, kid=True, spectral=False, feature_extractor=TINY, device="cpu")
    assert any("clamped from 1000 to 20" in n for n in r["notes"])
    assert r["kid"] == pytest.approx(direct(real_images, fake, kid=True, kid_subset_size=20)[
        torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-9)


def test_real_set_statistics_are_cached_by_fingerprint(real_images, tmp_path):
    cache = tmp_path / "fid-cache"
    fake = noisy(real_images, 16.0)
    kw = dict(fid=True, kid=True, spectral=False, feature_extractor=TINY, device="cpu", cache_dir=cache)
    TinyFeatures.seen = 0
    first = quality_metrics(real_images, fake, **kw)
    assert TinyFeatures.seen == 128
    key = tensor_digest(real_images)
    assert sorted(p.name for p in cache.iterdir()) == sorted([
        f"forgelab-{key}-{TINY}-features-64.pt", f"forgelab-{key}-{TINY}-stat-fid-64.pt",
    ])
    TinyFeatures.seen = 0
    second = quality_metrics(real_images, fake, **kw)
    assert TinyFeatures.seen == 64  # only the fake set went through the extractor
    assert second["fid"] == first["fid"] and second["kid"] == first["kid"]
    # Another real set gets its own entry, never the stale statistics.
    other = smooth_images(64, 32, seed=9)
    third = quality_metrics(other, fake, **kw)
    assert third["fid"] == pytest.approx(direct(other, fake, fid=True)[torch_fidelity.KEY_METRIC_FID], rel=1e-9)


def test_a_cache_file_with_foreign_objects_is_refused(real_images, tmp_path):
    cache = tmp_path / "fid-cache"
    cache.mkdir()
    name = f"forgelab-{tensor_digest(real_images)}-{TINY}-stat-fid-64.pt"
    torch.save({"mu": torch.zeros(2), "payload": Payload()}, cache / name)
    with pytest.raises(ValueError, match="holds objects other than tensors.*Payload"):
        quality_metrics(real_images, real_images, fid=True, kid=False, spectral=False, feature_extractor=TINY,
                        device="cpu", cache_dir=cache)


def test_folder_input_equals_tensor_input(tmp_path):
    real, fake = smooth_images(40, 32, seed=2), noisy(smooth_images(40, 32, seed=4), 12.0)
    write_pngs(real, tmp_path / "real")
    write_pngs(fake, tmp_path / "fake")
    kw = dict(fid=True, kid=True, spectral=True, feature_extractor=TINY, device="cpu", cache=False)
    from_folders = quality_metrics(tmp_path / "real", str(tmp_path / "fake"), **kw)
    from_tensors = quality_metrics(real, fake, **kw)
    assert from_folders["resolution"] == 32  # read from the square fake images
    for k in ("fid", "kid", "kid_std", "radial_l1", "x_l1", "y_l1", "cloaking"):
        assert from_folders[k] == pytest.approx(from_tensors[k], rel=1e-9, abs=1e-12), k


def test_offline_inception_download_fails_with_one_sentence(real_images, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", no_network)
    with pytest.raises(ValueError) as info:
        quality_metrics(real_images, real_images, fid=True, kid=False, spectral=False, device="cpu")
    msg = str(info.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg
    assert "--feature-extractor-weights PATH" in msg
    assert str(quality.hub_checkpoint_dir()) in msg and "torch-home" in msg
    assert msg.count(". ") == 0 and "\n" not in msg


def test_spectral_only_needs_no_weights(real_images, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch-fidelity was called for a spectral-only request")

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", forbidden)
    fake = noisy(real_images, 20.0)
    r = quality_metrics(real_images, fake, fid=False, kid=False, spectral=True)
    assert {k: r[k] for k in ("radial_l1", "x_l1", "y_l1", "cloaking")} == spectral_fidelity(real_images, fake)
    assert "fid" not in r and "feature_extractors" not in r


def test_weights_files_must_be_plain_tensors(tmp_path, real_images):
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1), "payload": Payload()}, bad)
    with pytest.raises(ValueError, match="not a plain state dict"):
        quality_metrics(real_images, real_images, feature_extractor_weights=bad, spectral=False, device="cpu")
    unfit = tmp_path / "unfit.pth"
    torch.save({"w": torch.zeros(1)}, unfit)
    with pytest.raises(ValueError, match="do not fit the feature extractor inception-v3-compat"):
        quality_metrics(real_images, real_images, feature_extractor_weights=unfit, spectral=False, device="cpu")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        quality_metrics(real_images, real_images, feature_extractor_weights=tmp_path / "missing.pth")


def test_bad_requests_name_the_problem(real_images, tmp_path):
    with pytest.raises(ValueError, match="Unknown feature extractor 'nope'"):
        quality_metrics(real_images, real_images, feature_extractor="nope")
    with pytest.raises(ValueError, match="No metric chosen"):
        quality_metrics(real_images, real_images, fid=False, kid=False, spectral=False)
    with pytest.raises(ValueError, match="uint8 tensor"):
        quality_metrics(real_images.float(), real_images, spectral=True, fid=False, kid=False)
    with pytest.raises(ValueError, match="32 px but the metrics run at 16 px"):
        quality_metrics(real_images, smooth_images(8, 16), fid=False, kid=False)
    with pytest.raises(FileNotFoundError):
        quality_metrics(tmp_path / "nowhere", real_images, fid=False, kid=False)
    with pytest.raises(ValueError, match="Unknown device"):
        quality_metrics(real_images, real_images, device="tpu")


def test_cli_json_and_table(tmp_path):
    from pipelines.cli import app

    real, fake = smooth_images(24, 32, seed=2), noisy(smooth_images(24, 32, seed=4), 12.0)
    write_pngs(real, tmp_path / "real")
    write_pngs(fake, tmp_path / "fake")
    runner = CliRunner()
    res = runner.invoke(app, ["metrics", str(tmp_path / "real"), str(tmp_path / "fake"), "--fid", "--spectral",
                              "--feature-extractor", TINY, "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    want = quality_metrics(real, fake, fid=True, kid=False, spectral=True, feature_extractor=TINY, device="cpu")
    assert got["fid"] == pytest.approx(want["fid"], rel=1e-9)
    assert got["cloaking"] == pytest.approx(want["cloaking"])
    res = runner.invoke(app, ["metrics", str(tmp_path / "real"), str(tmp_path / "fake"), "--spectral"])
    assert res.exit_code == 0, res.output
    assert "radial_l1" in res.stdout and "fid" not in res.stdout
    res = runner.invoke(app, ["metrics", str(tmp_path / "nowhere"), str(tmp_path / "fake"), "--spectral"])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "does not exist" in res.stderr

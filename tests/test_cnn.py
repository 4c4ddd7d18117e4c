"""Neural classifiers: learning an easy task, ResNet adaptation, persistence, early stopping, pretrained files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import checkerboard_task, smooth_images
from sklearn.metrics import average_precision_score
from torchvision.models import resnet18

from detectors.backbones import build_network, imagenet_weights_file
from detectors.base import CLASSIFIERS, Classifier
from detectors.cnn import ResNet18Classifier, SmallCNNClassifier
from detectors.features import extract


def spectrum_2d(images: torch.Tensor) -> torch.Tensor:
    """The feature function a Detector would pass for 'spectrum:smallcnn'."""
    return extract("spectrum", images, flatten=False)


def test_registered_and_follow_the_protocol():
    for name in ("smallcnn", "resnet18", "resnet50"):
        clf = CLASSIFIERS[name]()
        assert isinstance(clf, Classifier)
        assert clf.input_kind == "image"


def test_smallcnn_learns_the_checkerboard_task():
    X, y = checkerboard_task(96, seed=0)
    Xv, yv = checkerboard_task(32, seed=1)
    Xt, yt = checkerboard_task(64, seed=2)
    clf = SmallCNNClassifier(epochs=3, batch_size=16, seed=0).fit(X, y, Xv, yv)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (64, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert average_precision_score(yt, proba[:, 1]) > 0.95


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_resnet18_small_input_shapes(size, channels):
    net = build_network("resnet18", (channels, size, size), num_classes=3).eval()
    assert net.body.conv1.kernel_size == (3, 3) and net.body.conv1.stride == (1, 1)
    assert isinstance(net.body.maxpool, torch.nn.Identity)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits, emb = net(x), net.embed(x)
    assert logits.shape == (2, 3) and emb.shape == (2, 512)


def test_resnet_large_input_keeps_imagenet_stem():
    net = build_network("resnet18", (1, 128, 128), num_classes=2)
    assert net.body.conv1.kernel_size == (7, 7) and net.body.conv1.in_channels == 1
    assert isinstance(net.body.maxpool, torch.nn.MaxPool2d)


def test_save_load_gives_identical_probabilities(tmp_path):
    X, y = checkerboard_task(48, seed=0)
    clf = SmallCNNClassifier(epochs=1, batch_size=16, augment_p=0.5).set_feature_fn(spectrum_2d).fit(X, y)
    clf.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["classifier"] == "smallcnn" and cfg["input_shape"] == [1, 32, 32]
    # weights.pt is a plain state dict: it loads with weights_only=True
    assert isinstance(torch.load(tmp_path / "m" / "weights.pt", weights_only=True), dict)
    back = SmallCNNClassifier.load(tmp_path / "m").set_feature_fn(spectrum_2d)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_resnet18_one_step_then_save_load(tmp_path):
    X, y = checkerboard_task(8, seed=0)
    clf = ResNet18Classifier(epochs=1, batch_size=4).fit(X, y)
    clf.save(tmp_path / "r")
    back = ResNet18Classifier.load(tmp_path / "r")
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_feature_fn_without_augmentation_equals_precomputed_features():
    X, y = checkerboard_task(32, seed=0)
    raw = SmallCNNClassifier(epochs=1, batch_size=8, augment_p=0.0).set_feature_fn(spectrum_2d).fit(X, y)
    pre = SmallCNNClassifier(epochs=1, batch_size=8, augment_p=0.0).fit(spectrum_2d(X), y)
    np.testing.assert_allclose(raw.predict_proba(X), pre.predict_proba(spectrum_2d(X)), atol=1e-6)


def test_training_batches_are_augmented_before_features():
    X, _ = checkerboard_task(16, seed=0)
    y = np.arange(16) % 2
    seen: list[torch.Tensor] = []

    def spy(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.clone())
        return images.float() / 255

    clf = SmallCNNClassifier(epochs=1, batch_size=8, augment_p=0.0, flip_p=1.0).set_feature_fn(spy)
    seen_before = len(seen)
    clf.fit(X, y)
    flipped = X.flip(-1)
    train_batches = [b for b in seen[seen_before:] if b.shape[0] == 8]
    assert train_batches
    # every image in a training batch is the mirror image of a training image
    for batch in train_batches[-2:]:
        for img in batch:
            assert any(torch.equal(img, f) for f in flipped)


def test_early_stopping_restores_the_best_epoch():
    X, y = checkerboard_task(32, seed=0, amplitude=2.0)
    Xv, _ = checkerboard_task(24, seed=1, amplitude=2.0)
    # random validation labels make the validation AP wander, so the best epoch is not the last
    yv = np.random.default_rng(0).permutation(np.arange(24) % 2)
    clf = SmallCNNClassifier(epochs=6, batch_size=8, patience=2, lr=3e-3).fit(X, y, Xv, yv)
    aps = [h["val_ap"] for h in clf.history_]
    best = clf.best_epoch_
    assert best < len(aps), "the run must end after its best epoch for this check to mean anything"
    assert aps[best - 1] == max(aps)
    assert len(aps) <= best + 2  # stopped after `patience` epochs without improvement
    restored = average_precision_score(yv, clf.predict_proba(Xv)[:, 1])
    assert restored == pytest.approx(aps[best - 1], abs=1e-12)


def test_attribution_labels_give_k_columns():
    X, y = checkerboard_task(24, seed=0)
    y = np.arange(24) % 3
    proba = SmallCNNClassifier(epochs=1, batch_size=8).fit(X, y).predict_proba(X)
    assert proba.shape == (24, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


def test_pretrained_state_dict_file_loads(tmp_path):
    torch.manual_seed(0)
    ref = resnet18().state_dict()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(ref, path)
    net = build_network("resnet18", (3, 32, 32), num_classes=2, pretrained=str(path))
    body = net.body.state_dict()
    assert torch.equal(body["layer3.1.conv2.weight"], ref["layer3.1.conv2.weight"])
    assert torch.equal(body["bn1.running_var"], ref["bn1.running_var"])
    # 7x7 ImageNet stem adapted to 3x3: each filter keeps its response to a flat input
    assert body["conv1.weight"].shape == (64, 3, 3, 3)
    torch.testing.assert_close(body["conv1.weight"].sum((2, 3)), ref["conv1.weight"].sum((2, 3)))
    # one-channel input (log spectrum) at 128 px: the channel sum of the RGB filter
    net1 = build_network("resnet18", (1, 128, 128), num_classes=2, pretrained=path)
    torch.testing.assert_close(net1.body.conv1.weight[:, 0], ref["conv1.weight"].sum(1))
    assert net.head.weight.shape == (2, 512)  # the 1000-class fc is not used


def test_pretrained_imagenet_from_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(resnet18().state_dict(), tmp_path / "checkpoints" / imagenet_weights_file("resnet18"))
    net = build_network("resnet18", (3, 32, 32), 2, pretrained="imagenet")
    assert net.body.conv1.weight.shape == (64, 3, 3, 3)


def test_pretrained_offline_and_missing_file_are_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth.*--pretrained PATH"):
        build_network("resnet18", (3, 32, 32), 2, pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="--pretrained PATH"):
        build_network("resnet18", (3, 32, 32), 2, pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_network("smallcnn", (3, 32, 32), 2, pretrained=str(tmp_path / "nope.pth"))
    # through fit: the error surfaces before any training
    X, y = checkerboard_task(8, seed=0)
    with pytest.raises(ValueError, match="--pretrained"):
        ResNet18Classifier(epochs=1, pretrained="imagenet").fit(X, y)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    other = build_network("smallcnn", (3, 32, 32), 2).body.state_dict()
    torch.save(other, tmp_path / "small.pth")
    with pytest.raises(ValueError, match="does not fit resnet18"):
        build_network("resnet18", (3, 32, 32), 2, pretrained=tmp_path / "small.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="damaged"):
        build_network("resnet18", (3, 32, 32), 2, pretrained=tmp_path / "junk.pth")


def test_load_refuses_missing_damaged_and_foreign_folders(tmp_path):
    X, y = checkerboard_task(16, seed=0)
    small = SmallCNNClassifier(epochs=1, batch_size=8).fit(X, y)
    small.save(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SmallCNNClassifier.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds a 'smallcnn' classifier"):
        ResNet18Classifier.load(tmp_path / "a")
    # weights from a classifier on other features (1 channel) next to a 3-channel config
    other = SmallCNNClassifier(epochs=1, batch_size=8).fit(spectrum_2d(X), y)
    other.save(tmp_path / "b")
    (tmp_path / "a" / "weights.pt").write_bytes((tmp_path / "b" / "weights.pt").read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        SmallCNNClassifier.load(tmp_path / "a")
    (tmp_path / "b" / "weights.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="damaged"):
        SmallCNNClassifier.load(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        SmallCNNClassifier.load(tmp_path / "b")
    (tmp_path / "b" / "weights.pt").unlink()
    with pytest.raises(FileNotFoundError, match="weights.pt is missing"):
        SmallCNNClassifier.load(tmp_path / "b")


def test_bad_input_is_refused_with_a_sentence():
    X, y = checkerboard_task(16, seed=0)
    with pytest.raises(ValueError, match="not fitted"):
        SmallCNNClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="one label per sample"):
        SmallCNNClassifier(epochs=1).fit(X, y[:-1])
    with pytest.raises(ValueError, match="only one class"):
        SmallCNNClassifier(epochs=1).fit(X, np.zeros(16, dtype=int))
    with pytest.raises(ValueError, match="epochs"):
        SmallCNNClassifier(epochs=0).fit(X, y)
    clf = SmallCNNClassifier(epochs=1, batch_size=8).fit(X, y)
    with pytest.raises(ValueError, match="training resolution"):
        clf.predict_proba(smooth_images(2, 40))


def _hand_stats(feats: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Population mean and std over ``dims``, floored as the trainer floors them (no division by ~0)."""
    f = feats.double()
    mean, std = f.mean(dim=dims, keepdim=True), f.std(dim=dims, keepdim=True, unbiased=False)
    return mean.float(), std.clamp_min(1e-6 + 1e-3 * float(std.mean())).float()


@pytest.mark.parametrize("feature, norm", [("dct", "coefficient"), ("spectrum", "coefficient"), ("pixels", "channel")])
def test_auto_input_norm_is_per_coefficient_for_spectra_and_dct(tmp_path, feature, norm):
    """Frank et al.: every DCT / spectrum coefficient gets its own training-set mean and std; pixels keep one per channel."""
    from functools import partial

    from detectors.features import extract

    X = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    y = np.array([0, 1] * 12)
    fn = partial(extract, feature, flatten=False)
    clf = SmallCNNClassifier(epochs=1, batch_size=8).set_feature_fn(fn).fit(X, y)
    assert clf.input_norm == "auto" and clf.input_norm_ == norm
    feats = fn(X)
    mean, std = _hand_stats(feats, (0,) if norm == "coefficient" else (0, 2, 3))
    assert clf.network_.mean.shape == ((1, *feats.shape[1:]) if norm == "coefficient" else (1, feats.shape[1], 1, 1))
    torch.testing.assert_close(clf.network_.mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clf.network_.std, std, rtol=1e-5, atol=1e-5)
    clf.save(tmp_path / "m")
    back = SmallCNNClassifier.load(tmp_path / "m").set_feature_fn(fn)
    assert back.input_norm_ == norm and torch.equal(back.network_.mean, clf.network_.mean)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_explicit_input_norms_and_the_old_name():
    X = torch.rand(16, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 65).reshape(1, 1, 8, 8)
    y = np.array([0, 1] * 8)
    coef = SmallCNNClassifier(epochs=1, batch_size=8, input_norm="coefficient").fit(X, y)
    torch.testing.assert_close(coef.network_.mean, _hand_stats(X, (0,))[0], rtol=1e-5, atol=1e-5)
    old = SmallCNNClassifier(epochs=1, batch_size=8, input_norm="element").fit(X, y)
    assert old.input_norm_ == "coefficient" and torch.equal(old.network_.std, coef.network_.std)
    auto = SmallCNNClassifier(epochs=1, batch_size=8).fit(X, y)  # precomputed features: per channel
    torch.testing.assert_close(auto.network_.std, _hand_stats(X, (0, 2, 3))[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown input_norm 'pixel'; choose one of: auto, channel, coefficient"):
        SmallCNNClassifier(epochs=1, input_norm="pixel").fit(X, y)

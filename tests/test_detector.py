"""Detector = feature + classifier: fitting, thresholds, attribution, pairs, persistence, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_images
from sklearn.linear_model import LogisticRegression

from detectors.base import CLASSIFIERS
from detectors.detector import Detector, check_spec, valid_pairs
from detectors.metrics import choose_threshold, evaluate

SIZE = 32


def nearest_fakes(n: int, seed: int) -> torch.Tensor:
    """Smooth 16 px images upsampled x2 by pixel repetition: spectral replicas, as from a GAN upsampler."""
    small = smooth_images(n, SIZE // 2, seed)
    return F.interpolate(small.float(), scale_factor=2, mode="nearest").to(torch.uint8)


def checker_fakes(n: int, seed: int) -> torch.Tensor:
    """Smooth images plus a faint period-2 checkerboard (energy at the Nyquist corner, like transposed convs)."""
    img = smooth_images(n, SIZE, seed).float()
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    board = ((yy + xx) % 2 * 2 - 1).float() * 6
    return (img + board).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    return {
        "real": smooth_images(60, SIZE, seed=10),
        "fake": nearest_fakes(60, seed=11),
        "fake_b": checker_fakes(60, seed=12),
        "test_real": smooth_images(40, SIZE, seed=20),
        "test_fake": nearest_fakes(40, seed=21),
        "test_fake_b": checker_fakes(40, seed=22),
    }


class DummyImageClassifier:
    """An 'image' classifier that records what it is given: mean of its feature map -> logistic regression."""

    input_kind = "image"
    seen: dict = {}

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.fn = None

    def set_feature_fn(self, fn):
        self.fn = fn
        return self

    def _summary(self, X: torch.Tensor) -> np.ndarray:
        f = self.fn(X)
        DummyImageClassifier.seen = {"input_dtype": X.dtype, "feature_shape": tuple(f.shape)}
        return f.flatten(1).std(1, keepdim=True).double().numpy()

    def fit(self, X, y, X_val=None, y_val=None):
        self.lr = LogisticRegression().fit(self._summary(X), y)
        return self

    def predict_proba(self, X):
        return self.lr.predict_proba(self._summary(X))

    def save(self, folder: Path) -> None:
        Path(folder, "lr.json").write_text(json.dumps({"coef": self.lr.coef_.tolist(), "icpt": self.lr.intercept_.tolist()}))

    @classmethod
    def load(cls, folder: Path):
        d = json.loads(Path(folder, "lr.json").read_text())
        obj = cls()
        obj.lr = LogisticRegression()
        obj.lr.coef_, obj.lr.intercept_ = np.array(d["coef"]), np.array(d["icpt"])
        obj.lr.classes_ = np.array([0, 1])
        return obj


@pytest.fixture
def dummy_image(monkeypatch):
    monkeypatch.setitem(CLASSIFIERS, "dummyimg", DummyImageClassifier)
    return "dummyimg"


def test_radial_svm_separates_upsampling_artifacts(data):
    det = Detector("radial:svm").fit(data["real"], data["fake"])
    test = torch.cat([data["test_real"], data["test_fake"]])
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    s = det.score(test)
    assert s.shape == (80,) and ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(s, 1 - det.predict_proba(test)[:, 0])
    m = evaluate(y, s, det.threshold)
    assert m["auc"] >= 0.95 and m["acc_cal"] >= 0.9
    np.testing.assert_array_equal(det.predict(test), (s >= det.threshold).astype(int))
    # Scores from precomputed features (what transfer matrices reuse) are the same scores.
    np.testing.assert_array_equal(det.score_features(det.transform(test)), s)


@pytest.mark.parametrize(
    ("spec", "params"),
    [("radial:svm", {}), ("xy:lr", {}), ("dct:lr", {"C": 0.1}), ("spectrum:rf", {"n_estimators": 10}),
     ("radial:kmeans", {}), ("pixels:svm", {"kernel": "linear"})],
)
def test_save_load_gives_identical_scores(spec, params, data, tmp_path):
    det = Detector(spec, **params).fit(data["real"], data["fake"])
    test = torch.cat([data["test_real"], data["test_fake"]])
    det.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    assert meta["spec"] == spec and meta["resolution"] == [SIZE, SIZE] and meta["classes"] == [0, 1]
    assert meta["threshold"] == det.threshold and meta["classifier_params"] == params
    back = Detector.load(tmp_path / "model")
    np.testing.assert_array_equal(back.score(test), det.score(test))
    assert back.threshold == det.threshold


def test_threshold_is_chosen_on_given_validation_data(data):
    val_real, val_fake = data["test_real"][:20], data["test_fake"][:20]
    det = Detector("xy:lr").fit(data["real"], data["fake"], val_real=val_real, val_fake=val_fake)
    s_val = det.score(torch.cat([val_real, val_fake]))
    y_val = np.r_[np.zeros(20), np.ones(20)].astype(int)
    assert det.threshold == pytest.approx(choose_threshold(y_val, s_val))
    assert det.validation == pytest.approx(evaluate(y_val, s_val, det.threshold))


def test_holdout_is_a_stratified_fifth():
    det = Detector("radial:lr", seed=3)
    y = np.r_[np.zeros(50), np.ones(30), np.full(20, 2)].astype(np.int64)
    train, val = det._holdout(y)
    assert len(val) == 20 and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
    np.testing.assert_array_equal(np.bincount(y[val]), [10, 6, 4])
    with pytest.raises(ValueError, match="Too few images"):
        det._holdout(np.array([0, 0, 0, 1]))


def test_multiclass_attribution(data):
    det = Detector("radial:svm").fit(data["real"], [data["fake"], data["fake_b"]], multiclass=True,
                                               fake_names=["nearest", "checker"])
    assert det.classes == [0, 1, 2] and det.class_names == ["real", "nearest", "checker"]
    test = torch.cat([data["test_real"], data["test_fake"], data["test_fake_b"]])
    y = np.repeat([0, 1, 2], 40)
    p = det.predict_proba(test)
    assert p.shape == (120, 3)
    np.testing.assert_allclose(det.score(test), 1 - p[:, 0])
    assert np.mean(det.attribute(test) == y) >= 0.9


def test_a_list_of_fakes_is_one_class_without_multiclass(data):
    det = Detector("radial:lr").fit(data["real"], [data["fake"], data["fake_b"]])
    assert det.classes == [0, 1] and det.class_names == ["real", "fake"]
    assert det.predict_proba(data["test_real"]).shape == (40, 2)


def test_batch_size_and_float_input_do_not_change_scores(data):
    det = Detector("radial:svm", feature_batch_size=7).fit(data["real"], data["fake"])
    ref = det.score(data["test_fake"])
    det.feature_batch_size = 1000
    np.testing.assert_allclose(det.score(data["test_fake"]), ref, atol=1e-12)
    np.testing.assert_allclose(det.score(data["test_fake"].float() / 255), ref, atol=1e-5)


def test_feature_options(data):
    det = Detector("radial:lr", {"length": 12, "normalize": "minmax"}).fit(data["real"], data["fake"])
    x = det.transform(data["test_real"])
    assert x.shape == (40, 12)
    assert torch.allclose(x.amax(1), torch.ones(40))
    with pytest.raises(ValueError, match="Unknown option.*lenght.*choose from: length, normalize"):
        Detector("radial:lr", {"lenght": 3})
    with pytest.raises(ValueError, match="flatten"):
        Detector("dct:lr", {"flatten": False})


def test_valid_pairs_and_spec_errors(dummy_image):
    pairs = valid_pairs()
    for p in ("radial:svm", "xy:lr", "dct:rf", "pixels:kmeans", "pixels:dummyimg", "spectrum:dummyimg", "dct:dummyimg"):
        assert p in pairs
    assert "radial:dummyimg" not in pairs and "xy:dummyimg" not in pairs
    assert check_spec("radial:svm") == ("radial", "svm")
    with pytest.raises(ValueError, match="FEATURE:CLASSIFIER.*radial:svm"):
        check_spec("radial")
    with pytest.raises(ValueError, match="Unknown feature 'fourier'.*radial"):
        check_spec("fourier:svm")
    with pytest.raises(ValueError, match="Unknown classifier 'svn'.*svm"):
        check_spec("radial:svn")
    with pytest.raises(ValueError, match="cannot take the 1D feature 'xy'.*pixels:dummyimg"):
        check_spec("xy:dummyimg")


def test_image_classifier_gets_raw_images_and_the_feature(dummy_image, data, tmp_path):
    det = Detector(f"dct:{dummy_image}").fit(data["real"], data["fake_b"])
    assert DummyImageClassifier.seen == {"input_dtype": torch.uint8, "feature_shape": (24, 3, SIZE, SIZE)}
    s = det.score(data["test_fake_b"])
    det.save(tmp_path / "m")
    back = Detector.load(tmp_path / "m")
    np.testing.assert_allclose(back.score(data["test_fake_b"]), s)
    assert DummyImageClassifier.seen["feature_shape"] == (40, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="inside the CNN"):
        det.score_features(det.transform(data["test_fake_b"]))


def test_neural_detector_round_trip(data, tmp_path):
    valid_pairs()  # fills the registry
    if "smallcnn" not in CLASSIFIERS:
        pytest.skip("detectors.cnn is not available")
    det = Detector("spectrum:smallcnn", epochs=2, batch_size=16, device="cpu").fit(data["real"][:32], data["fake"][:32])
    assert det.classifier.batch_size == 16  # the CNN's training batch, not the feature batch
    s = det.score(data["test_fake"])
    assert ((s >= 0) & (s <= 1)).all()
    det.save(tmp_path / "cnn")
    np.testing.assert_allclose(Detector.load(tmp_path / "cnn").score(data["test_fake"]), s, atol=1e-6)


def test_resolution_mismatch_is_refused(data):
    det = Detector("radial:lr").fit(data["real"], data["fake"])
    with pytest.raises(ValueError, match="fitted on 32x32 images but got 16x16"):
        det.score(smooth_images(4, 16))


def test_bad_fit_input(data):
    det = Detector("radial:lr")
    with pytest.raises(ValueError, match="not fitted"):
        det.score(data["real"])
    with pytest.raises(ValueError, match="empty list"):
        det.fit(data["real"], [])
    with pytest.raises(ValueError, match="same size"):
        det.fit(data["real"], smooth_images(10, 16))
    with pytest.raises(ValueError, match="both val_real and val_fake"):
        det.fit(data["real"], data["fake"], val_real=data["real"])
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        det.fit(data["real"][:, :1], data["fake"])
    with pytest.raises(TypeError, match="torch.Tensor"):
        det.fit(data["real"].numpy(), data["fake"])
    with pytest.raises(ValueError, match="Unknown parameter"):
        Detector("radial:svm", C=1, bogus=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            Detector("radial:lr", device="cuda")


def test_load_refuses_missing_and_damaged_files(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Detector.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no detector.json"):
        Detector.load(tmp_path / "empty")
    folder = tmp_path / "m"
    Detector("radial:svm").fit(data["real"], data["fake"]).save(folder)
    meta = folder / "detector.json"
    good = meta.read_text()
    meta.write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match="damaged"):
        Detector.load(folder)
    broken = json.loads(good)
    del broken["threshold"]
    meta.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="damaged.*threshold"):
        Detector.load(folder)
    meta.write_text(good)
    model = folder / "classifier" / "model.skops"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged|could not be read"):
        Detector.load(folder)
    import shutil

    shutil.rmtree(folder / "classifier")
    with pytest.raises(FileNotFoundError, match="classifier is missing"):
        Detector.load(folder)

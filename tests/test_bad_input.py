"""Bad input at the command line: every command, every kind of broken or odd input.

Each bad case must end with exit code 1 and exactly one line on stderr that starts with
"Error:" and names the problem (no traceback unless --debug), and must leave every file that
existed before untouched (the finished runs and input folders of the module's ``lab`` are
hashed before and after each command). Valid-but-odd images (grayscale, RGBA, palette, CMYK,
16-bit, 1x1, non-square) are accepted and converted: those cases must exit 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()

# Tiny settings so that every command that gets past its checks finishes in about a second.
TINY_TRAIN = ["--resolution", "32", "--steps", "2", "--batch-size", "4", "--width", "8", "--ckpt-every", "0",
              "--sample-every", "0", "--device", "cpu"]
STUDY_TOML = """\
[study]
name = "tiny"
resolution = 32
device = "cpu"
[train]
steps = 1
batch_size = 4
width = 4
ckpt_every = 0
sample_every = 0
[grid]
upsamplers = ["nearest"]
[generate]
n = 12
batch_size = 12
grid = 4
"""
STUDY_TRANSFER = '[transfer]\ndetectors = ["radial:lr"]\n'


# --------------------------------------------------------------------------- hand-made files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A 100-byte PNG whose header declares ``width`` x ``height`` RGB pixels (10^10 by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)  # far too little data; a decoder must never get that far
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """A 64x64 JPEG cut off after half of its bytes."""
    buf = io.BytesIO()
    Image.fromarray(smooth_images(1, 64)[0].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


BAD_FILES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    # case id: (file name, writer, words the message must contain)
    "truncated-jpeg": ("cut.jpg", write_truncated_jpeg, "cut.jpg"),
    "zero-byte-png": ("empty.png", lambda p: p.write_bytes(b""), "empty.png"),
    "text-named-png": ("notes.png", lambda p: p.write_text("not an image\n"), "notes.png"),
    "image-bomb": ("bomb.png", write_png_bomb, "bomb.png"),
    # Above Pillow's warning threshold but below its error threshold: only our own check stops it.
    "image-bomb-warning-size": ("big.png", lambda p: write_png_bomb(p, 12_000, 12_000), "big.png"),
}


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_odd_images(folder: Path) -> dict[str, Path]:
    """Valid but unusual images, one per case: modes, bit depths and shapes a loader must convert."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _rgb(40, 40, 0)
    out = {
        "grayscale": ("gray.png", Image.fromarray(rgb[..., 0], "L")),
        "rgba": ("rgba.png", Image.fromarray(np.dstack([rgb, np.full((40, 40), 128, np.uint8)]), "RGBA")),
        "palette": ("palette.png", Image.fromarray(rgb).convert("P")),
        "cmyk-jpeg": ("cmyk.jpg", Image.fromarray(rgb).convert("CMYK")),
        "16-bit": ("deep.png", Image.fromarray(rgb[..., 1].astype(np.uint16) * 257)),
        "1x1": ("dot.png", Image.fromarray(np.array([[[10, 200, 30]]], np.uint8))),
        "non-square": ("wide.png", Image.fromarray(_rgb(30, 70, 1))),
    }
    paths = {}
    for case, (name, img) in out.items():
        img.save(folder / name)
        paths[case] = folder / name
    return paths


# --------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    """Inputs and finished runs that every bad command must leave untouched."""

    root: Path
    data: Path  # 12 PNGs of 40 px
    run: Path  # finished `train`
    fake: Path  # finished `generate` (12 images)
    det: Path  # finished `detect fit`
    scores: Path  # finished `detect score` CSV
    transfer: Path  # finished `transfer`
    study: Path  # finished `study`
    study_toml: Path


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def tree_hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (hidden files included), by path."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORGELAB_CACHE", str(tmp_path_factory.mktemp("lab-cache")))
        data = root / "data"
        write_pngs(smooth_images(12, 40, seed=3), data)
        steps = [
            ["train", "--data", data, *TINY_TRAIN, "--out", root / "run"],
            ["generate", root / "run", "--n", "12", "--out", root / "fake", "--device", "cpu"],
            ["detect", "fit", "-d", "radial:lr", "--real", data, "--fake", root / "fake", "--out", root / "det",
             "--resolution", "32", "--device", "cpu", "--no-progress"],
            ["detect", "score", root / "det", data, "--out", root / "scores.csv", "--device", "cpu", "--no-progress"],
            ["transfer", "--real", data, "--fake", f"a={root / 'fake'}", "--detector", "radial:lr",
             "--out", root / "transfer"],
        ]
        (root / "tiny.toml").write_text(STUDY_TOML)
        steps.append(["study", root / "tiny.toml", "--data", data, "--out", root / "study", "--quiet"])
        for argv in steps:
            r = invoke(*argv)
            assert r.exit_code == 0, (argv, r.output)
    return Lab(root, data, root / "run", root / "fake", root / "det", root / "scores.csv", root / "transfer",
               root / "study", root / "tiny.toml")


def run_checked(lab: Lab, *args: object, extra_roots: tuple[Path, ...] = ()):
    """Invoke the CLI and assert that every file of the lab (and ``extra_roots``) is unchanged."""
    roots = (lab.root, *extra_roots)
    before = tree_hashes(*roots)
    result = invoke(*args)
    after = tree_hashes(*roots)
    changed = [p for p, h in before.items() if after.get(p) != h]
    assert not changed, f"{args} damaged {changed[:5]}"
    return result


def assert_one_error(result, *needles: str) -> str:
    """Exit 1, no traceback, and stderr is one line 'Error: ...' containing every needle."""
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- image folders

# Commands that read a folder of images, with the folder at X and any output under OUT.
IMAGE_COMMANDS: dict[str, Callable[[Lab, Path, Path], list[object]]] = {
    "train": lambda lab, x, out: ["train", "--data", x, *TINY_TRAIN, "--out", out],
    "detect-fit": lambda lab, x, out: ["detect", "fit", "-d", "radial:lr", "--real", x, "--fake", lab.fake,
                                       "--out", out, "--resolution", "32", "--device", "cpu", "--no-progress"],
    "detect-score": lambda lab, x, out: ["detect", "score", lab.det, x, "--out", out / "s.csv", "--device", "cpu",
                                         "--no-progress"],
    "detect-eval": lambda lab, x, out: ["detect", "eval", lab.det, "--real", lab.data, "--fake", x, "--device", "cpu",
                                        "--no-progress"],
    # No --resolution: transfer and metrics must read it from the fake folder, so that path is tried too.
    "transfer": lambda lab, x, out: ["transfer", "--real", lab.data, "--fake", f"a={x}", "--detector", "radial:lr",
                                     "--out", out],
    "metrics": lambda lab, x, out: ["metrics", lab.data, x, "--spectral", "--quiet"],
    "study": lambda lab, x, out: ["study", lab.study_toml, "--data", x, "--out", out, "--quiet"],
    "data-info": lambda lab, x, out: ["data", "info", x],
}


def make_folder(case: str, tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """The input folder of a bad-folder case and the words its error message must contain."""
    x = tmp_path / "input"
    if case == "missing-path":
        return x, ("does not exist",)
    x.mkdir()
    if case == "empty-folder":
        return x, ("holds no images",)
    if case == "no-images":
        (x / "readme.txt").write_text("no pictures here\n")
        return x, ("holds no images",)
    name, write, needle = BAD_FILES[case]
    write(x / name)
    return x, (needle,)


FOLDER_CASES = ["missing-path", "empty-folder", "no-images", *BAD_FILES]


@pytest.mark.parametrize("case", FOLDER_CASES)
@pytest.mark.parametrize("command", list(IMAGE_COMMANDS))
def test_bad_image_folder_is_one_line_error(command, case, lab, tmp_path):
    x, needles = make_folder(case, tmp_path)
    if command == "data-info" and case in BAD_FILES:
        # `data info` lists unreadable files beside readable ones; a folder with no readable image
        # is one sentence naming the first bad file, not a table of "None .. None" (issue 18).
        r = run_checked(lab, *IMAGE_COMMANDS[command](lab, x, tmp_path / "out"), extra_roots=(tmp_path,))
        assert_one_error(r, "None of the 1 image file(s)", str(x / BAD_FILES[case][0]))
        return
    before = tree_hashes(tmp_path)
    r = run_checked(lab, *IMAGE_COMMANDS[command](lab, x, tmp_path / "out"))
    assert_one_error(r, *needles)
    assert tree_hashes(tmp_path / "input") == {k: v for k, v in before.items() if "/input/" in k}


def test_bad_files_are_skipped_with_a_reason_beside_good_ones(lab, tmp_path):
    x = tmp_path / "mixed"
    write_pngs(smooth_images(12, 40, seed=4), x)
    for name, write, _ in BAD_FILES.values():
        write(x / name)
    r = run_checked(lab, "detect", "score", lab.det, x, "--out", tmp_path / "s.csv", "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert len(rows) == 1 + 12  # header + the good images only
    assert f"Skipped {len(BAD_FILES)} unreadable file(s)" in r.stderr


SINGLE_IMAGE_OK = {"train", "detect-score", "detect-eval", "data-info"}


@pytest.mark.parametrize("command", list(IMAGE_COMMANDS))
def test_single_image(command, lab, tmp_path):
    """One image is enough to train, score, evaluate and inspect; splits and statistics need more."""
    x = tmp_path / "one"
    write_pngs(smooth_images(1, 40, seed=5), x)
    r = run_checked(lab, *IMAGE_COMMANDS[command](lab, x, tmp_path / "out"), extra_roots=(x,))
    if command in SINGLE_IMAGE_OK:
        assert r.exit_code == 0, r.output
    else:
        assert_one_error(r, "1")
    if command == "study":  # known before any training starts: no study folder is made
        assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- odd but valid images


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The seven odd images plus five ordinary ones (transfer splits need a dozen)."""
    folder = tmp_path_factory.mktemp("odd")
    paths = write_odd_images(folder)
    write_pngs(smooth_images(5, 40, seed=6), folder)
    return folder, paths


def test_odd_images_are_converted_to_rgb(odd_folder):
    from pipelines.data.images import load_images

    folder, paths = odd_folder
    s = load_images(folder, 32, cache=False)
    assert not s.skipped and len(s) == 12
    got = {Path(f).name: img for f, img in zip(s.files, s.images, strict=True)}
    gray = got["gray.png"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # grayscale -> R = G = B
    assert torch.equal(got["dot.png"], torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32))
    # 16-bit: value v * 257 must come back as v (scaled, not clipped to 255).
    deep = load_images(folder, 40, cache=False)
    deep_img = deep.images[[Path(f).name for f in deep.files].index("deep.png")]
    assert torch.equal(deep_img[0], torch.from_numpy(_rgb(40, 40, 0)[..., 1]))
    # RGBA at alpha 128 over white: (v * 128 + 255 * 127) / 255, within Pillow's rounding.
    rgba = deep.images[[Path(f).name for f in deep.files].index("rgba.png")].float()
    expect = (torch.from_numpy(_rgb(40, 40, 0)).permute(2, 0, 1).float() * 128 + 255 * 127) / 255
    assert (rgba - expect).abs().max() <= 1.0


@pytest.mark.parametrize("command", list(IMAGE_COMMANDS))
def test_odd_images_are_accepted(command, lab, odd_folder, tmp_path):
    folder, paths = odd_folder
    r = run_checked(lab, *IMAGE_COMMANDS[command](lab, folder, tmp_path / "out"), extra_roots=(folder,))
    assert r.exit_code == 0, r.output
    assert "Skipped" not in r.output
    if command == "detect-score":
        listed = {Path(line.split(",")[0]).name for line in (tmp_path / "out" / "s.csv").read_text().splitlines()[1:]}
        assert {p.name for p in paths.values()} <= listed
    if command == "data-info":
        assert "readable     12" in r.output
        for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
            assert f"{mode}: 1" in r.output


# --------------------------------------------------------------------------- names, numbers, configs


def _train(lab: Lab, tmp: Path, *extra: object) -> list[object]:
    return ["train", "--data", lab.data, *TINY_TRAIN, "--out", tmp / "out", *extra]


def _study(lab: Lab, tmp: Path, toml: str | None = None, *extra: object) -> list[object]:
    path = lab.study_toml
    if toml is not None:
        path = tmp / "study.toml"
        path.write_text(toml)
    return ["study", path, "--data", lab.data, "--out", tmp / "out", "--quiet", *extra]


def _fit(lab: Lab, tmp: Path, *extra: object) -> list[object]:
    return ["detect", "fit", "--real", lab.data, "--fake", lab.fake, "--out", tmp / "out", "--resolution", "32",
            "--device", "cpu", "--no-progress", *extra]


def _transfer(lab: Lab, tmp: Path, *extra: object, detector: str = "radial:lr") -> list[object]:
    return ["transfer", "--real", lab.data, "--fake", f"a={lab.fake}", "--detector", detector, "--out", tmp / "out",
            *extra]


def _bad_train_toml(tmp: Path) -> Path:
    p = tmp / "train.toml"
    p.write_text("steps = 2\nlearning_rate = 0.1\n")
    return p


# case id -> (argv builder, words the message must contain)
NAME_AND_NUMBER_CASES: dict[str, tuple[Callable[[Lab, Path], list[object]], tuple[str, ...]]] = {
    "train-unknown-upsampler": (lambda lab, t: _train(lab, t, "--upsampler", "wavelet"), ("wavelet", "nearest")),
    "train-unknown-arch": (lambda lab, t: _train(lab, t, "--arch", "stylegan"), ("stylegan", "dcgan")),
    "train-unknown-upsample-layers": (lambda lab, t: _train(lab, t, "--upsample-layers", "first"), ("first",)),
    "train-unknown-config-key": (lambda lab, t: _train(lab, t, "--config", _bad_train_toml(t)), ("learning_rate",)),
    "train-missing-config": (lambda lab, t: _train(lab, t, "--config", t / "nope.toml"), ("nope.toml",)),
    "train-resolution-48": (lambda lab, t: _train(lab, t, "--resolution", "48"), ("48",)),
    "train-resolution-0": (lambda lab, t: _train(lab, t, "--resolution", "0"), ("0",)),
    "train-steps-0": (lambda lab, t: _train(lab, t, "--steps", "0"), ("steps",)),
    "train-steps-negative": (lambda lab, t: _train(lab, t, "--steps", "-1"), ("steps",)),
    "train-batch-size-0": (lambda lab, t: _train(lab, t, "--batch-size", "0"), ("batch_size",)),
    "train-width-0": (lambda lab, t: _train(lab, t, "--width", "0"), ("width",)),
    "train-limit-negative": (lambda lab, t: _train(lab, t, "--limit", "-1"), ("limit",)),
    "train-limit-0": (lambda lab, t: _train(lab, t, "--limit", "0"), ("limit",)),
    "train-unknown-device": (lambda lab, t: _train(lab, t, "--device", "tpu"), ("tpu",)),
    "train-resume-and-overwrite": (lambda lab, t: _train(lab, t, "--resume", "--overwrite"), ("--resume",)),
    "generate-n-0": (lambda lab, t: ["generate", lab.run, "--n", "0", "--out", t / "out"], ("--n",)),
    "generate-n-negative": (lambda lab, t: ["generate", lab.run, "--n", "-1", "--out", t / "out"], ("--n",)),
    "generate-batch-size-0": (lambda lab, t: ["generate", lab.run, "--n", "2", "--batch-size", "0", "--out", t / "out"],
                              ("--batch-size",)),
    "fit-unknown-feature": (lambda lab, t: _fit(lab, t, "-d", "wavelets:svm"), ("wavelets", "radial")),
    "fit-unknown-classifier": (lambda lab, t: _fit(lab, t, "-d", "radial:xgboost"), ("xgboost", "svm")),
    "fit-spec-without-colon": (lambda lab, t: _fit(lab, t, "-d", "radial"), ("FEATURE:CLASSIFIER",)),
    "fit-image-classifier-on-1d-feature": (lambda lab, t: _fit(lab, t, "-d", "radial:smallcnn"), ("smallcnn",)),
    "fit-unknown-param": (lambda lab, t: _fit(lab, t, "-d", "radial:lr", "-p", "gamma_ray=1"), ("gamma_ray",)),
    "fit-unknown-feature-option": (lambda lab, t: _fit(lab, t, "-d", "radial:lr", "-o", "bins=3"), ("bins",)),
    "fit-malformed-param": (lambda lab, t: _fit(lab, t, "-p", "C"), ("KEY=VALUE",)),
    "fit-resolution-0": (lambda lab, t: _fit(lab, t, "--resolution", "0"), ("resolution",)),
    "fit-limit-negative": (lambda lab, t: _fit(lab, t, "--limit", "-1"), ("limit",)),
    "fit-feature-batch-size-0": (lambda lab, t: _fit(lab, t, "--feature-batch-size", "0"), ("feature_batch_size",)),
    "score-limit-0": (lambda lab, t: ["detect", "score", lab.det, lab.data, "--out", t / "s.csv", "--limit", "0",
                                      "--no-progress"], ("limit",)),
    "eval-limit-negative": (lambda lab, t: ["detect", "eval", lab.det, "--real", lab.data, "--fake", lab.fake,
                                            "--limit", "-1", "--no-progress"], ("limit",)),
    "score-missing-model": (lambda lab, t: ["detect", "score", t / "nomodel", lab.data, "--out", t / "s.csv"],
                            ("nomodel",)),
    "eval-model-is-image-folder": (lambda lab, t: ["detect", "eval", lab.data, "--real", lab.data, "--fake", lab.fake],
                                   ("detector.json",)),
    "transfer-unknown-feature": (lambda lab, t: _transfer(lab, t, detector="wavelets:lr"), ("wavelets",)),
    "transfer-unknown-classifier": (lambda lab, t: _transfer(lab, t, detector="radial:xgboost"), ("xgboost",)),
    "transfer-unknown-rows": (lambda lab, t: _transfer(lab, t, "--rows", "diagonal"), ("diagonal",)),
    "transfer-bad-fake-spec": (lambda lab, t: ["transfer", "--real", lab.data, "--fake", str(lab.fake), "--detector",
                                               "radial:lr", "--out", t / "out"], ("NAME=",)),
    "transfer-resolution-0": (lambda lab, t: _transfer(lab, t, "--resolution", "0"), ("resolution",)),
    "transfer-jobs-0": (lambda lab, t: _transfer(lab, t, "--jobs", "0"), ("--jobs",)),
    "transfer-limit-0": (lambda lab, t: _transfer(lab, t, "--limit", "0"), ("limit",)),
    "transfer-jpeg-0": (lambda lab, t: _transfer(lab, t, "--jpeg", "0"), ("jpeg",)),
    "transfer-bad-fractions": (lambda lab, t: _transfer(lab, t, "--fractions", "0.5,0.5"), ("fractions",)),
    "metrics-resolution-0": (lambda lab, t: ["metrics", lab.data, lab.fake, "--spectral", "--resolution", "0"],
                             ("resolution",)),
    "metrics-limit-0": (lambda lab, t: ["metrics", lab.data, lab.fake, "--spectral", "--limit", "0"], ("limit",)),
    "metrics-batch-size-0": (lambda lab, t: ["metrics", lab.data, lab.fake, "--fid", "--batch-size", "0"],
                             ("batch",)),
    "metrics-kid-subset-0": (lambda lab, t: ["metrics", lab.data, lab.fake, "--kid", "--kid-subset-size", "0"],
                             ("subset",)),
    "study-missing-config": (lambda lab, t: ["study", t / "nope.toml", "--out", t / "out"], ("nope.toml",)),
    "study-unknown-top-level-key": (lambda lab, t: _study(lab, t, "colour = 3\n" + STUDY_TOML), ("colour",)),
    "study-unknown-section": (lambda lab, t: _study(lab, t, STUDY_TOML + "[trian]\nsteps = 2\n"), ("trian",)),
    "study-unknown-section-key": (lambda lab, t: _study(lab, t, STUDY_TOML.replace("n = 12", "n = 12\ncount = 3")),
                                  ("count",)),
    "study-unknown-upsampler": (lambda lab, t: _study(lab, t, STUDY_TOML.replace('"nearest"', '"wavelet"')),
                                ("wavelet",)),
    "study-unknown-arch": (lambda lab, t: _study(lab, t, STUDY_TOML.replace("[grid]", '[grid]\narchs = ["stylegan"]')),
                           ("stylegan",)),
    "study-unknown-feature": (lambda lab, t: _study(lab, t, STUDY_TOML + STUDY_TRANSFER.replace("radial", "wavelets")),
                              ("wavelets",)),
    "study-unknown-classifier": (lambda lab, t: _study(lab, t, STUDY_TOML + STUDY_TRANSFER.replace("lr", "xgboost")),
                                 ("xgboost",)),
    "study-patches-not-square": (lambda lab, t: _study(lab, t, STUDY_TOML + STUDY_TRANSFER + "patches = 3\npatch_size = 16\n"),
                                 ("[transfer]", "square")),
    "study-patches-without-size": (lambda lab, t: _study(lab, t, STUDY_TOML + STUDY_TRANSFER + "patches = 4\n"),
                                   ("patch_size",)),
    "study-resolution-48": (lambda lab, t: _study(lab, t, STUDY_TOML.replace("resolution = 32", "resolution = 48")),
                            ("48",)),
    "study-steps-0": (lambda lab, t: _study(lab, t, None, "--set", "train.steps=0"), ("steps",)),
    "study-steps-negative": (lambda lab, t: _study(lab, t, STUDY_TOML.replace("steps = 1", "steps = -1")), ("steps",)),
    "study-generate-n-0": (lambda lab, t: _study(lab, t, None, "--set", "generate.n=0"), ("n",)),
    "study-n-real-0": (lambda lab, t: _study(lab, t, None, "--set", "study.n_real=0"), ("n_real",)),
    "study-too-few-fakes-for-transfer": (lambda lab, t: _study(lab, t, STUDY_TOML.replace("n = 12", "n = 5")
                                                               + STUDY_TRANSFER), ("[generate] n",)),
    "study-wrong-type": (lambda lab, t: _study(lab, t, None, "--set", "train.batch_size=\"four\""), ("batch_size",)),
    "study-malformed-set": (lambda lab, t: _study(lab, t, None, "--set", "steps"), ("section.key=value",)),
    "study-not-toml": (lambda lab, t: _study(lab, t, "[study\nname = \n"), ("TOML",)),
    "data-prepare-unknown-dataset": (lambda lab, t: ["data", "prepare", "imagenet", "--root", t / "root"],
                                     ("imagenet", "imagewoof")),
    "data-prepare-unknown-size": (lambda lab, t: ["data", "prepare", "imagewoof", "--root", t / "root", "--size", "64",
                                                  "--archive", t / "a.tgz"], ("64",)),
    "data-info-max-sizes-negative": (lambda lab, t: ["data", "info", lab.data, "--max-sizes", "-1"], ("max-sizes",)),
    "report-missing-folder": (lambda lab, t: ["report", t / "nostudy"], ("nostudy",)),
    "report-not-a-study": (lambda lab, t: ["report", lab.data], ("study",)),
    "report-empty-folder": (lambda lab, t: ["report", _mkdir(t / "empty")], ("study",)),
    "report-damaged-study-json": (lambda lab, t: ["report", _damaged_copy(lab.study, t, "study.json")], ("study.json",)),
    "score-damaged-detector-json": (lambda lab, t: ["detect", "score", _damaged_copy(lab.det, t, "detector.json"),
                                                    lab.data, "--out", t / "s.csv", "--no-progress"], ("detector.json",)),
    "resume-damaged-train-config": (lambda lab, t: _resume_with(lab, t, lambda r: (r / "train_config.json")
                                                                .write_text("{half")), ("train_config.json",)),
    "generate-missing-checkpoint": (lambda lab, t: ["generate", t / "norun", "--n", "2", "--out", t / "out"],
                                    ("norun",)),
    "generate-empty-folder": (lambda lab, t: ["generate", _mkdir(t / "emptyrun"), "--n", "2", "--out", t / "out"],
                              ("checkpoint.pt",)),
    "generate-image-folder": (lambda lab, t: ["generate", lab.data, "--n", "2", "--out", t / "out"],
                              ("checkpoint.pt",)),
    "generate-text-as-checkpoint": (lambda lab, t: ["generate", _text(t / "c.pt"), "--n", "2", "--out", t / "out"],
                                    ("c.pt",)),
    "generate-zero-byte-checkpoint": (lambda lab, t: ["generate", _text(t / "c.pt", ""), "--n", "2", "--out",
                                                      t / "out"], ("c.pt",)),
}


def _damaged_copy(src: Path, tmp: Path, name: str) -> Path:
    """A copy of the run folder ``src`` whose file ``name`` is cut in half."""
    dst = tmp / src.name
    shutil.copytree(src, dst)
    data = (dst / name).read_bytes()
    (dst / name).write_bytes(data[: len(data) // 2])
    return dst


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _text(p: Path, text: str = "hello\n") -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", list(NAME_AND_NUMBER_CASES))
def test_bad_name_number_or_config_is_one_line_error(case, lab, tmp_path):
    build, needles = NAME_AND_NUMBER_CASES[case]
    r = run_checked(lab, *build(lab, tmp_path))
    assert_one_error(r, *needles)


# --------------------------------------------------------------------------- data prepare archives


def _tar_with(members: dict[str, bytes], path: Path) -> Path:
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _truncated_tar(tmp: Path) -> Path:
    full = _tar_with({"x/a.bin": np.random.default_rng(0).bytes(50_000)}, tmp / "full.tgz")
    cut = tmp / "a.tgz"
    cut.write_bytes(full.read_bytes()[:2000])
    return cut


ARCHIVE_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing-archive": (lambda t: t / "nope.tgz", ("nope.tgz", "does not exist")),
    "folder-as-archive": (lambda t: _mkdir(t / "folder.tgz"), ("folder.tgz", "is a folder")),
    "zero-byte-archive": (lambda t: _text(t / "a.tgz", ""), ("a.tgz",)),
    "text-as-archive": (lambda t: _text(t / "a.tgz"), ("a.tgz", "tar")),
    "truncated-archive": (lambda t: _truncated_tar(t), ("a.tgz",)),
    "path-traversal-archive": (lambda t: _tar_with({"imagewoof2-160/../../escaped.txt": b"x"}, t / "a.tgz"),
                               ("outside",)),
    "not-imagewoof-archive": (lambda t: _tar_with({"other/readme.txt": b"x"}, t / "a.tgz"), ("ImageWoof",)),
}


@pytest.mark.parametrize("case", list(ARCHIVE_CASES))
def test_data_prepare_bad_archive_is_one_line_error(case, lab, tmp_path):
    make, needles = ARCHIVE_CASES[case]
    archive = make(tmp_path)
    r = run_checked(lab, "data", "prepare", "imagewoof", "--root", tmp_path / "root", "--archive", archive)
    assert_one_error(r, *needles)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def _fake_imagewoof(folder: Path) -> Path:
    from pipelines.data.images import IMAGEWOOF_CLASSES

    for split in ("train", "val"):
        for wnid in IMAGEWOOF_CLASSES:
            write_pngs(smooth_images(1, 40), folder / split / wnid)
    return folder


def test_data_prepare_keeps_a_prepared_copy(lab, tmp_path):
    """A complete copy under --root is the finished run of `data prepare`: reported, not touched."""
    root = tmp_path / "root"
    _fake_imagewoof(root / "imagewoof2-160")
    archive = _tar_with({"imagewoof2-160/train/x.txt": b"x"}, tmp_path / "a.tgz")
    r = run_checked(lab, "data", "prepare", "imagewoof", "--root", root, "--archive", archive, extra_roots=(root,))
    assert r.exit_code == 0, r.output
    assert "ready" in r.output and not (root / "imagewoof2-160" / "train" / "x.txt").exists()


def test_data_prepare_refuses_a_foreign_folder_in_the_way(lab, tmp_path):
    root = tmp_path / "root"
    (root / "imagewoof2-160").mkdir(parents=True)
    (root / "imagewoof2-160" / "mine.txt").write_text("keep me\n")
    archive = _tar_with({"imagewoof2-160/train/x.txt": b"x"}, tmp_path / "a.tgz")
    r = run_checked(lab, "data", "prepare", "imagewoof", "--root", root, "--archive", archive, extra_roots=(root,))
    assert_one_error(r, "imagewoof2-160")
    assert sorted(p.name for p in (root / "imagewoof2-160").iterdir()) == ["mine.txt"]


def test_data_prepare_root_under_a_file_is_one_line_error(lab, tmp_path):
    archive = _tar_with({"x/a.txt": b"x"}, tmp_path / "a.tgz")
    r = run_checked(lab, "data", "prepare", "imagewoof", "--root", lab.data / "img_0000.png", "--archive", archive)
    assert_one_error(r, "img_0000.png")


# --------------------------------------------------------------------------- checkpoints and detector files


class _RunsCode:
    """Unpickling this would create ``marker``: the proof that a loader executed code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _SetsState:
    """A skops-serialisable object whose ``__setstate__`` creates a marker file when it is loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def _copy_run(lab: Lab, tmp: Path) -> Path:
    dst = tmp / "run"
    shutil.copytree(lab.run, dst)
    return dst


def _other_arch_checkpoint(lab: Lab, tmp: Path) -> Path:
    state = torch.load(lab.run / "checkpoint.pt", weights_only=True)
    state["config"]["arch"] = "sngan"  # dcgan weights that claim to be an sngan
    torch.save(state, tmp / "other.pt")
    return tmp / "other.pt"


def _truncated_checkpoint(lab: Lab, tmp: Path, into: Path | None = None) -> Path:
    data = (lab.run / "checkpoint.pt").read_bytes()
    target = into or tmp / "cut.pt"
    target.write_bytes(data[: len(data) // 2])
    return target


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": "forgelab-gan-checkpoint", "config": {"arch": "dcgan"}, "payload": _RunsCode(marker)}, path)
    return path


def _evil_detector(lab: Lab, tmp: Path, marker: Path) -> Path:
    import skops.io as sio

    det = tmp / "det"
    shutil.copytree(lab.det, det)
    model = det / "classifier" / "model.skops"
    state = sio.load(model, trusted=sio.get_untrusted_types(file=model))
    state["payload"] = _SetsState(str(marker))
    sio.dump(state, model)
    return det


def _truncated_detector(lab: Lab, tmp: Path) -> Path:
    det = tmp / "det"
    shutil.copytree(lab.det, det)
    model = det / "classifier" / "model.skops"
    model.write_bytes(model.read_bytes()[:300])
    return det


def _resume_with(lab: Lab, tmp: Path, damage: Callable[[Path], object], *extra: object) -> list[object]:
    run = _copy_run(lab, tmp)
    damage(run)
    return ["train", "--out", run, "--resume", "--data", lab.data, "--steps", "3", *extra]


CHECKPOINT_CASES: dict[str, tuple[Callable[[Lab, Path, Path], list[object]], tuple[str, ...]]] = {
    "generate-other-arch": (lambda lab, t, m: ["generate", _other_arch_checkpoint(lab, t), "--n", "2", "--out",
                                               t / "out", "--device", "cpu"], ("sngan",)),
    "resume-with-other-arch": (lambda lab, t, m: _resume_with(lab, t, lambda r: None, "--arch", "sngan"),
                               ("dcgan", "sngan")),
    "resume-with-other-upsampler": (lambda lab, t, m: _resume_with(lab, t, lambda r: None, "--upsampler", "nearest"),
                                    ("upsampler", "nearest")),
    "generate-truncated": (lambda lab, t, m: ["generate", _truncated_checkpoint(lab, t), "--n", "2", "--out",
                                              t / "out", "--device", "cpu"], ("cut.pt", "damaged")),
    "resume-truncated": (lambda lab, t, m: _resume_with(lab, t, lambda r: _truncated_checkpoint(lab, t, r / "checkpoint.pt")),
                         ("checkpoint.pt", "damaged")),
    "generate-pickle-payload": (lambda lab, t, m: ["generate", _evil_checkpoint(t / "evil.pt", m), "--n", "2", "--out",
                                                   t / "out", "--device", "cpu"], ("evil.pt", "code")),
    "resume-pickle-payload": (lambda lab, t, m: _resume_with(lab, t, lambda r: _evil_checkpoint(r / "checkpoint.pt", m)),
                              ("checkpoint.pt", "code")),
    "score-untrusted-skops": (lambda lab, t, m: ["detect", "score", _evil_detector(lab, t, m), lab.data, "--out",
                                                 t / "s.csv", "--no-progress"], ("model.skops", "trust")),
    "eval-untrusted-skops": (lambda lab, t, m: ["detect", "eval", _evil_detector(lab, t, m), "--real", lab.data,
                                                "--fake", lab.fake, "--no-progress"], ("model.skops", "trust")),
    "score-truncated-skops": (lambda lab, t, m: ["detect", "score", _truncated_detector(lab, t), lab.data, "--out",
                                                 t / "s.csv", "--no-progress"], ("model.skops",)),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoint_or_model_is_refused_without_running_code(case, lab, tmp_path):
    marker = tmp_path / "code-ran"
    build, needles = CHECKPOINT_CASES[case]
    argv = build(lab, tmp_path, marker)
    r = run_checked(lab, *argv)
    assert_one_error(r, *needles)
    assert not marker.exists(), "loading the file executed code from it"


def test_the_payloads_would_run_code_if_loaded_unsafely(tmp_path):
    """The checks above prove something only if the payloads really run code under an unsafe load."""
    import pickle

    import skops.io as sio

    marker = tmp_path / "m1"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()
    marker2 = tmp_path / "m2"
    sio.dump({"x": _SetsState(str(marker2))}, tmp_path / "s.skops")
    sio.load(tmp_path / "s.skops", trusted=sio.get_untrusted_types(file=tmp_path / "s.skops"))
    assert marker2.exists()


# --------------------------------------------------------------------------- finished runs


FINISHED_CASES: dict[str, Callable[[Lab], list[object]]] = {
    "train": lambda lab: ["train", "--data", lab.data, *TINY_TRAIN, "--out", lab.run],
    "generate": lambda lab: ["generate", lab.run, "--n", "3", "--out", lab.fake, "--device", "cpu"],
    "detect-fit": lambda lab: ["detect", "fit", "-d", "radial:lr", "--real", lab.data, "--fake", lab.fake, "--out",
                               lab.det, "--resolution", "32", "--device", "cpu", "--no-progress"],
    "detect-score": lambda lab: ["detect", "score", lab.det, lab.data, "--out", lab.scores, "--no-progress"],
    "transfer": lambda lab: ["transfer", "--real", lab.data, "--fake", f"a={lab.fake}", "--detector", "radial:lr",
                             "--out", lab.transfer],
    # Output folders that hold another command's finished run, or are the input data.
    "train-into-study": lambda lab: ["train", "--data", lab.data, *TINY_TRAIN, "--out", lab.study],
    "study-into-train-run": lambda lab: ["study", lab.study_toml, "--data", lab.data, "--out", lab.run, "--quiet"],
    "study-into-data": lambda lab: ["study", lab.study_toml, "--data", lab.data, "--out", lab.data, "--quiet"],
    "generate-into-data": lambda lab: ["generate", lab.run, "--n", "3", "--out", lab.data, "--device", "cpu"],
    # --overwrite replaces a finished run, never a folder forgelab did not write.
    "train-overwrite-data": lambda lab: ["train", "--data", lab.data, *TINY_TRAIN, "--out", lab.data, "--overwrite"],
    "generate-overwrite-data": lambda lab: ["generate", lab.run, "--n", "3", "--out", lab.data, "--overwrite"],
    "fit-overwrite-data": lambda lab: ["detect", "fit", "-d", "radial:lr", "--real", lab.data, "--fake", lab.fake,
                                       "--out", lab.data, "--resolution", "32", "--overwrite", "--no-progress"],
    "transfer-overwrite-data": lambda lab: ["transfer", "--real", lab.data, "--fake", f"a={lab.fake}", "--detector",
                                            "radial:lr", "--out", lab.data, "--overwrite"],
    "study-overwrite-data": lambda lab: ["study", lab.study_toml, "--data", lab.data, "--out", lab.data, "--quiet",
                                         "--overwrite"],
    "fit-into-train-run": lambda lab: ["detect", "fit", "-d", "radial:lr", "--real", lab.data, "--fake", lab.fake,
                                       "--out", lab.run, "--resolution", "32", "--device", "cpu", "--no-progress"],
}


@pytest.mark.parametrize("case", list(FINISHED_CASES))
def test_finished_run_in_output_folder_is_kept(case, lab):
    r = run_checked(lab, *FINISHED_CASES[case](lab))
    assert_one_error(r)
    assert any(w in r.stderr for w in ("already", "not empty", "holds")), r.stderr
    if case.endswith("-into-train-run"):  # the message says what the folder really holds
        assert "'train' run" in r.stderr


def test_finished_study_rerun_unchanged_touches_nothing(lab):
    """A finished study, rerun with its config unchanged, is kept as it is and says so (exit 0; issue 18)."""
    r = run_checked(lab, "study", lab.study_toml, "--data", lab.data, "--out", lab.study, "--quiet")
    assert r.exit_code == 0, r.output
    assert "Nothing to do" in r.stdout and f"forgelab report {lab.study}" in r.stdout and "--overwrite" in r.stdout


def test_resume_into_a_folder_that_is_not_a_run_is_refused(lab, tmp_path):
    """`train --resume` may start a fresh run, but never inside a folder of someone else's files."""
    data = tmp_path / "photos"
    shutil.copytree(lab.data, data)
    names = sorted(p.name for p in data.iterdir())
    r = run_checked(lab, "train", "--resume", "--data", data, *TINY_TRAIN, "--out", data, extra_roots=(data,))
    assert_one_error(r, "photos")
    assert sorted(p.name for p in data.iterdir()) == names  # no checkpoint, samples/ or manifest added


@pytest.mark.parametrize("command", ["metrics", "transfer"])
def test_fake_set_manifest_with_a_bogus_resolution_is_not_trusted(command, lab, tmp_path):
    """The working size comes from the images when a fake set's manifest names an impossible one."""
    fake = tmp_path / "fake"
    shutil.copytree(lab.fake, fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    (fake / "manifest.json").write_text(json.dumps({**manifest, "resolution": 100_000}))
    if command == "metrics":
        r = run_checked(lab, "metrics", lab.data, fake, "--spectral", "--json", "--quiet", extra_roots=(fake,))
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["resolution"] == 32
    else:
        r = run_checked(lab, "transfer", "--real", lab.data, "--fake", f"a={fake}", "--detector", "radial:lr",
                        "--out", tmp_path / "out", extra_roots=(fake,))
        assert r.exit_code == 0, r.output
        assert "Resolution 32 px" in r.stdout


FILE_AS_OUT_CASES: dict[str, Callable[[Lab, Path], list[object]]] = {
    "train": lambda lab, f: ["train", "--data", lab.data, *TINY_TRAIN, "--out", f],
    "generate": lambda lab, f: ["generate", lab.run, "--n", "3", "--out", f, "--device", "cpu"],
    "detect-fit": lambda lab, f: ["detect", "fit", "-d", "radial:lr", "--real", lab.data, "--fake", lab.fake,
                                  "--out", f, "--resolution", "32", "--device", "cpu", "--no-progress"],
    "transfer": lambda lab, f: ["transfer", "--real", lab.data, "--fake", f"a={lab.fake}", "--detector", "radial:lr",
                                "--out", f],
    "study": lambda lab, f: ["study", lab.study_toml, "--data", lab.data, "--out", f, "--quiet"],
}


@pytest.mark.parametrize("case", list(FILE_AS_OUT_CASES))
def test_output_path_that_is_a_file_is_one_line_error(case, lab):
    target = lab.data / "img_0000.png"
    r = run_checked(lab, *FILE_AS_OUT_CASES[case](lab, target))
    assert_one_error(r, "img_0000.png")


# --------------------------------------------------------------------------- --debug


def test_debug_shows_the_traceback(lab, tmp_path):
    argv = ["train", "--data", tmp_path / "missing", *TINY_TRAIN, "--out", tmp_path / "out"]
    plain = invoke(*argv)
    assert_one_error(plain, "does not exist")
    r = invoke("--debug", *argv)
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.stderr and "FileNotFoundError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ")

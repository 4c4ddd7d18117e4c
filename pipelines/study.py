"""Studies: one TOML file drives train -> generate -> spectra -> metrics -> transfer -> report.

A study folder holds one sub-folder per step kind (``generators/``, ``fakes/``, ``samples/``,
``spectra/``, ``quality/``, ``transfer/``) and ``steps.json``, which records each finished step
with a hash of everything it was computed from. A rerun skips the steps whose hash still
matches and whose files are all there, and redoes the others, so an interrupted study resumes
where it stopped and an edited config recomputes only what the edit touched.

Config layout (every section but [study] and one of [grid] / [[generators]] is optional)::

    [study]        name, seed, resolution, data, subset, n_real, device
    [train]        defaults for every generator: any field of gans.training.TrainConfig
    [grid]         archs x upsamplers x spectral_d, every combination is one generator
    [[generators]] extra explicit variants: name plus any [train] key
    [generate]     n, batch_size, seed, grid, save_fakes
    [quality]      spectral, fid, kid, feature_extractor_weights
    [transfer]     detectors, rows, fractions, jpeg, attribute
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
import torch

from pipelines.runfolder import RunFolder, atomic_path, read_json, write_json, write_text
from plumbing.locks import folder_contents

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

# Bump when a step's outputs change meaning, so old study folders recompute them.
STEP_VERSION = 1
STEPS_FILE = "steps.json"
PLAN_FILE = "study.json"
CONFIG_COPY = "config.toml"
SECTIONS = ("study", "train", "grid", "generators", "generate", "quality", "transfer")
# Fields of TrainConfig that the [study] section sets for every generator.
STUDY_OWNED_TRAIN_KEYS = ("resolution", "device")
# Fields of TrainConfig that change how often things are logged, not what is learned.
TRAIN_KEYS_NOT_HASHED = ("ckpt_every", "sample_every", "log_every", "device")
TRANSFER_ROWS = ("each", "all", "loo")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_NAMES = ("real", "all")  # the real set's files and the transfer matrix's union row


# --------------------------------------------------------------------------- config sections


@dataclass
class StudyOptions:
    """The [study] section: what the study is called, its data, resolution and seed."""

    name: str = "study"
    seed: int = 0
    resolution: int = 32
    data: str | None = None  # "embedded", a folder, or unset for $FORGELAB_DATA
    subset: str | None = None  # sub-folder of the data folder, e.g. "train" for ImageWoof
    n_real: int | None = None  # how many real images to load (None: all; embedded: its default)
    device: str = "auto"
    threads: int | None = None  # torch intra-op CPU threads during the study (None: torch's default)


@dataclass
class GridOptions:
    """The [grid] section: every combination of these lists becomes one generator."""

    archs: list[str] | None = None  # None: the [train] arch
    upsamplers: list[str] | str = field(default_factory=list)  # "all" for all six
    spectral_d: list[bool] = field(default_factory=lambda: [False])


@dataclass
class GenerateOptions:
    """The [generate] section: how many fakes each generator makes and what is kept on disk."""

    n: int = 1000
    batch_size: int = 256
    seed: int | None = None  # None: the study seed
    grid: int = 64  # images in each sample grid PNG
    save_fakes: bool = False  # also write every fake as a PNG fake set (fakes/<name>/)


@dataclass
class QualityOptions:
    """The [quality] section: spectral fidelity always, FID/KID when Inception weights exist."""

    spectral: bool = True
    fid: bool = False
    kid: bool = False
    feature_extractor_weights: str | None = None


@dataclass
class TransferOptions:
    """The [transfer] section: detectors trained on each generator's fakes, tested on all."""

    detectors: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=lambda: ["each"])
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    jpeg: int | None = None
    attribute: bool = False
    jobs: int = 1  # cells fitted at once, in worker processes (how, not what: not part of the step hash)


@dataclass
class GeneratorSpec:
    """One generator of the study: a unique name and its full training options."""

    name: str
    train: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.train["arch"]

    @property
    def upsampler(self) -> str:
        return self.train["upsampler"]

    @property
    def spectral_d(self) -> bool:
        return bool(self.train.get("spectral_d", False))


@dataclass
class StudyConfig:
    """A validated study config."""

    study: StudyOptions
    train: dict[str, Any]
    generators: list[GeneratorSpec]
    generate: GenerateOptions
    quality: QualityOptions
    transfer: TransferOptions | None
    raw: dict[str, Any]
    source: str = "<dict>"
    text: str | None = None  # the TOML text, when read from a file

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (what the manifest stores)."""
        return {
            "study": dataclasses.asdict(self.study),
            "train": dict(self.train),
            "generators": [{"name": g.name, **g.train} for g in self.generators],
            "generate": dataclasses.asdict(self.generate),
            "quality": dataclasses.asdict(self.quality),
            "transfer": dataclasses.asdict(self.transfer) if self.transfer else None,
        }


# --------------------------------------------------------------------------- type checking


_SINGULAR = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _describe(hint: Any) -> str:
    """Words for a type hint, as a config author reads them."""
    if _is_union(hint):
        return " or ".join(_describe(a) for a in get_args(hint) if a is not type(None))
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {a for a in args}
            inner = _PLURAL.get(args[0], "values") if len(kinds) == 1 else "values"
            return f"a list of {len(args)} {inner}"
        return f"a list of {_PLURAL.get(args[0], 'values') if args else 'values'}"
    return _SINGULAR.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or TypeError."""
    if hint is Any:
        return value
    if _is_union(hint):
        for arg in get_args(hint):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except TypeError:
                pass
        raise TypeError
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TypeError
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
        items = [_coerce(v, args[0] if args else Any) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise TypeError
    return value


def _check_keys(table: Any, valid: list[str] | tuple[str, ...], where: str) -> dict[str, Any]:
    """``table`` as a dict, or ValueError naming an unknown key and listing the valid ones."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of keys (for example [{where.strip('[]')}]), not {type(table).__name__}.")
    for key in table:
        if key not in valid:
            raise ValueError(
                f"Unknown key {key!r} in {where}; valid keys are: {', '.join(valid)}."
            )
    return table


def _typed(table: dict[str, Any], hints: dict[str, Any], where: str) -> dict[str, Any]:
    """Every value of ``table`` checked and converted against ``hints``."""
    out = {}
    for key, value in table.items():
        try:
            out[key] = _coerce(value, hints[key])
        except TypeError:
            raise ValueError(
                f"{where} {key} = {value!r} must be {_describe(hints[key])}; fix it in the config."
            ) from None
    return out


def _section(cls: type, table: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a TOML table, checking keys and types."""
    names = [f.name for f in dataclasses.fields(cls)]
    table = _check_keys({} if table is None else table, names, where)
    return cls(**_typed(table, get_type_hints(cls), where))


# --------------------------------------------------------------------------- training options


def _train_config_class() -> type:
    from gans.training import TrainConfig

    return TrainConfig


def train_keys() -> list[str]:
    """Keys allowed in [train] and [[generators]]: the TrainConfig fields the study does not set."""
    return [f.name for f in dataclasses.fields(_train_config_class()) if f.name not in STUDY_OWNED_TRAIN_KEYS]


def _train_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(_train_config_class()):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _check_names(opts: dict[str, Any]) -> None:
    """Architecture and upsampler names checked against their registries (early, clear errors)."""
    from gans.networks import check_arch
    from gans.upsamplers import check_upsampler

    if "arch" in opts:
        check_arch(opts["arch"])
    if "upsampler" in opts:
        check_upsampler(opts["upsampler"])


# --------------------------------------------------------------------------- parsing


def _generator_name(arch: str, upsampler: str, spectral_d: bool, several_archs: bool) -> str:
    parts = ([arch] if several_archs else []) + [upsampler] + (["sd"] if spectral_d else [])
    return "-".join(parts)


def parse_config(raw: dict[str, Any], source: str = "<dict>", text: str | None = None) -> StudyConfig:
    """Validate a parsed TOML dict and resolve it into a StudyConfig (the list of generators)."""
    from detectors.detector import check_spec
    from gans.upsamplers import UPSAMPLERS

    _check_keys(raw, SECTIONS, f"the top level of {source}")
    study = _section(StudyOptions, raw.get("study"), "[study]")
    if study.n_real is not None and study.n_real < 2:
        raise ValueError(f"[study] n_real = {study.n_real} must be at least 2; fix it in the config.")
    if study.threads is not None and study.threads < 1:
        raise ValueError(f"[study] threads = {study.threads} must be at least 1 (or left out for torch's default).")
    if not NAME_PATTERN.match(study.name):
        raise ValueError(f"[study] name = {study.name!r} must be letters, digits, '-', '_' or '.'; rename it.")

    keys = train_keys()
    hints = get_type_hints(_train_config_class())
    train = _typed(_check_keys(raw.get("train", {}), keys, "[train]"), hints, "[train]")
    _check_names(train)
    from gans.networks import check_resolution

    check_resolution(study.resolution)
    defaults = {k: v for k, v in _train_defaults().items() if k not in STUDY_OWNED_TRAIN_KEYS}
    base = {**defaults, **train}
    if "seed" not in train:
        base["seed"] = study.seed

    generators: list[GeneratorSpec] = []
    if "grid" in raw:
        grid = _section(GridOptions, raw["grid"], "[grid]")
        ups = list(UPSAMPLERS) if grid.upsamplers == "all" else grid.upsamplers
        if isinstance(ups, str):
            raise ValueError(f"[grid] upsamplers = {ups!r} must be a list of names or \"all\"; fix it in the config.")
        archs = grid.archs or [base["arch"]]
        for name in ups:
            _check_names({"upsampler": name})
        for a in archs:
            _check_names({"arch": a})
        for arch in archs:
            for sd in grid.spectral_d:
                for up in ups:
                    opts = {**base, "arch": arch, "upsampler": up, "spectral_d": sd}
                    generators.append(GeneratorSpec(_generator_name(arch, up, sd, len(archs) > 1), opts))

    extra = raw.get("generators", [])
    if not isinstance(extra, list):
        raise ValueError("generators must be an array of tables written [[generators]]; fix it in the config.")
    several_archs = len({g.arch for g in generators}) > 1
    for i, table in enumerate(extra):
        where = f"[[generators]] #{i + 1}"
        table = _check_keys(table, ["name", *keys], where)
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{where} name = {name!r} must be a string; fix it in the config.")
        opts = _typed({k: v for k, v in table.items() if k != "name"}, hints, where)
        _check_names(opts)
        merged = {**base, **opts}
        if not merged.get("upsampler"):
            raise ValueError(f"{where} has no upsampler; add upsampler = \"nearest\" (or another kind).")
        name = name or _generator_name(merged["arch"], merged["upsampler"], bool(merged.get("spectral_d")), several_archs)
        generators.append(GeneratorSpec(name, merged))

    if not generators:
        raise ValueError(
            f"{source} defines no generators; add a [grid] with upsamplers = [...] or [[generators]] entries."
        )
    seen: set[str] = set()
    for g in generators:
        if not NAME_PATTERN.match(g.name) or g.name in RESERVED_NAMES:
            raise ValueError(
                f"Generator name {g.name!r} is not allowed; use letters, digits, '-', '_' or '.' (and not {' or '.join(RESERVED_NAMES)})."
            )
        if g.name in seen:
            raise ValueError(f"Two generators are both named {g.name!r}; give the [[generators]] entry its own name = \"...\".")
        seen.add(g.name)
        try:  # TrainConfig.validate checks every training option (ranges, losses, devices)
            train_config_from(study, g)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Generator {g.name!r}: {e}") from None

    generate = _section(GenerateOptions, raw.get("generate"), "[generate]")
    for key in ("n", "batch_size", "grid"):
        if getattr(generate, key) <= 0:
            raise ValueError(f"[generate] {key} = {getattr(generate, key)} must be positive; fix it in the config.")
    quality = _section(QualityOptions, raw.get("quality"), "[quality]")

    transfer = None
    if "transfer" in raw:
        transfer = _section(TransferOptions, raw["transfer"], "[transfer]")
        if not transfer.detectors:
            raise ValueError("[transfer] detectors is empty; list at least one, e.g. detectors = [\"radial:svm\"].")
        for spec in transfer.detectors:
            check_spec(spec)
        for row in transfer.rows:
            if row not in TRANSFER_ROWS:
                raise ValueError(f"[transfer] rows contains {row!r}; choose from: {', '.join(TRANSFER_ROWS)}.")
        if abs(sum(transfer.fractions) - 1.0) > 1e-6 or min(transfer.fractions) <= 0:
            raise ValueError(
                f"[transfer] fractions = {list(transfer.fractions)} must be three positive numbers (train, validation, test) summing to 1."
            )
        if transfer.jpeg is not None and not 1 <= transfer.jpeg <= 100:
            raise ValueError(f"[transfer] jpeg = {transfer.jpeg} must be a JPEG quality from 1 to 100.")
        if transfer.attribute and len(generators) < 2:
            raise ValueError("[transfer] attribute = true needs at least two generators to tell apart.")

    return StudyConfig(study, train, generators, generate, quality, transfer, raw, source, text)


def packaged_configs() -> list[str]:
    """Names of the study configs shipped with forgelab (usable instead of a path)."""
    return sorted(p.name[:-5] for p in resources.files("configs").iterdir() if p.name.endswith(".toml"))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` overrides applied (values in TOML syntax)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        target, sep, text = item.partition("=")
        section, dot, key = target.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise ValueError(f"Override {item!r} must look like section.key=value, e.g. train.steps=1500.")
        if section == "generators":
            raise ValueError("Overrides cannot reach [[generators]] entries; set the key in [train] or edit the config.")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word such as a path or a name is a string
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"Override {item!r}: [{section}] is not a table of keys.")
        table[key] = value
    return out


def load_config(config: str | Path | dict[str, Any] | StudyConfig,
                overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read and validate a study config (a TOML path, a packaged config name, or a parsed dict).

    ``overrides`` are ``section.key=value`` strings applied on top, e.g. ``train.steps=1500``.
    """
    if isinstance(config, StudyConfig):
        if overrides:
            return parse_config(apply_overrides(config.raw, overrides), config.source,
                                _note_overrides(config.text, overrides))
        return config
    if isinstance(config, dict):
        return parse_config(apply_overrides(config, overrides))
    path = Path(config)
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), path.name
    elif path.exists():
        raise IsADirectoryError(f"{path} is a folder; give the study config's .toml file.")
    else:
        name = path.name[:-5] if path.name.endswith(".toml") else path.name
        if str(path) not in (name, f"{name}.toml") or name not in packaged_configs():
            raise FileNotFoundError(
                f"Config {str(config)!r} not found; give a TOML file or one of the packaged configs: {', '.join(packaged_configs())}."
            )
        text = (resources.files("configs") / f"{name}.toml").read_text(encoding="utf-8")
        source = f"{name}.toml"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source} is not valid TOML ({e}); fix the syntax.") from None
    return parse_config(apply_overrides(raw, overrides), source, _note_overrides(text, overrides))


def _note_overrides(text: str | None, overrides: list[str] | tuple[str, ...]) -> str | None:
    """The config text with the overrides appended as comments (the copy kept in the study folder)."""
    if text is None or not overrides:
        return text
    return text.rstrip("\n") + "\n\n# Overrides given on the command line (applied on top of the above):\n" + "".join(
        f"#   {o}\n" for o in overrides)


def train_config(cfg: StudyConfig, gen: GeneratorSpec) -> Any:
    """The validated gans.training.TrainConfig of one generator of the study."""
    return train_config_from(cfg.study, gen)


def train_config_from(study: StudyOptions, gen: GeneratorSpec) -> Any:
    """TrainConfig of ``gen`` with the resolution and device of the [study] section."""
    return _train_config_class().from_dict({**gen.train, "resolution": study.resolution, "device": study.device})


# --------------------------------------------------------------------------- steps


def digest(inputs: Any) -> str:
    """A short stable hash of JSON-able ``inputs``."""
    blob = json.dumps({"v": STEP_VERSION, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tensor_digest(x: torch.Tensor) -> str:
    """A short hash of a tensor's shape, dtype and bytes (identifies the real data set)."""
    h = hashlib.sha256(f"{tuple(x.shape)}{x.dtype}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class StepLog:
    """``steps.json``: which steps finished, from which inputs, with which files, in how long."""

    def __init__(self, root: str | Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.path = self.root / STEPS_FILE
        self.echo = echo or (lambda _msg: None)
        self.steps: dict[str, dict[str, Any]] = read_json(self.path).get("steps", {}) if self.path.exists() else {}

    def _save(self) -> None:
        write_json(self.path, {"version": STEP_VERSION, "steps": self.steps})

    def is_done(self, key: str, hash_: str) -> bool:
        """True when ``key`` finished from the same inputs and all its files still exist."""
        rec = self.steps.get(key)
        return (
            rec is not None
            and rec.get("status") == "done"
            and rec.get("hash") == hash_
            and all(self._exists(p) for p in rec.get("outputs", []))
        )

    def _exists(self, relative: Any) -> bool:
        """True when ``relative`` (read from steps.json) names an existing path inside the study folder."""
        try:
            return RunFolder(self.root).inside(relative).exists()
        except (ValueError, TypeError):  # a path leading outside the folder never counts as an output
            return False

    def run(self, key: str, inputs: Any, fn: Callable[[bool], None], outputs: list[str]) -> str:
        """Run ``fn(resume)`` unless ``key`` already finished from ``inputs``; return the inputs' hash.

        ``resume`` is True when the previous attempt of this step started from the same
        inputs and was interrupted: the step may continue from its partial files (a training
        checkpoint, finished transfer cells). Otherwise the step must start clean.
        """
        h = digest(inputs)
        if self.is_done(key, h):
            self.echo(f"[dim]skip[/]  {key} (finished earlier)")
            return h
        prev = self.steps.get(key, {})
        resume = prev.get("status") == "running" and prev.get("hash") == h
        self.steps[key] = {"status": "running", "hash": h, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._save()
        self.echo(f"[bold]{'resume' if resume else 'run'}[/]   {key}")
        t0 = time.perf_counter()
        fn(resume)
        missing = [p for p in outputs if not (self.root / p).exists()]
        if missing:
            raise RuntimeError(f"Step {key} finished without writing {', '.join(missing)}.")
        seconds = time.perf_counter() - t0
        # Marked done only now, after every output file was written (atomically) by fn.
        self.steps[key] = {
            "status": "done", "hash": h, "seconds": round(seconds, 2), "outputs": outputs,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._save()
        self.echo(f"[green]done[/]  {key} ({seconds:.1f} s)")
        return h


# --------------------------------------------------------------------------- array files


def save_array(path: str | Path, array: np.ndarray) -> Path:
    """Write one array as .npy, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


def save_arrays(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write named arrays as one .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_arrays` (no pickled objects allowed)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_grid(images: torch.Tensor, path: str | Path, n: int = 64) -> Path:
    """Save the first ``n`` uint8 images (N, 3, H, W) as one PNG grid, atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    x = images[:n].cpu()
    nrow = int(np.ceil(np.sqrt(x.shape[0])))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return Path(path)


def mean_spectra(images: torch.Tensor, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Mean radial, horizontal, vertical and 2D log power spectra of a uint8 set (detectors.features)."""
    from detectors.features import extract

    n, _, h, w = images.shape
    radial = extract("radial", images, batch_size=batch_size).mean(0)
    xy = extract("xy", images, batch_size=batch_size).mean(0)
    full = extract("spectrum", images, batch_size=batch_size).mean(0).reshape(h, w)
    # xy holds the mean over rows (a function of the horizontal frequency, length W) then
    # the mean over columns (vertical frequency, length H), both centred (DC at index W//2).
    return {
        "radial": radial.double().cpu().numpy(),
        "horizontal": xy[:w].double().cpu().numpy(),
        "vertical": xy[w:].double().cpu().numpy(),
        "spectrum2d": full.double().cpu().numpy(),
        "count": np.array(n),
    }


# --------------------------------------------------------------------------- running a study


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; other names unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _echo(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda _msg: None
    from rich.console import Console

    console = Console(highlight=False)
    return console.print


def _load_real(cfg: StudyConfig, data: str | Path | None, progress: bool):
    """The study's real images as a pipelines.data.ImageSet."""
    from pipelines.data import load_data, resolve_data

    spec = resolve_data(str(data) if data is not None else cfg.study.data)
    if spec != "embedded" and cfg.study.subset:
        spec = Path(spec) / cfg.study.subset
        if not spec.is_dir():
            raise FileNotFoundError(
                f"{spec} does not exist; [study] subset = {cfg.study.subset!r} must name a sub-folder of the data folder."
            )
    return load_data(spec, cfg.study.resolution, limit=cfg.study.n_real, seed=cfg.study.seed, progress=progress), spec


def _image_set(images: torch.Tensor, name: str):
    """Fakes held in memory as an ImageSet (one pseudo file name per image, for split bookkeeping)."""
    from pipelines.data import ImageSet

    files = [f"{name}#{i}" for i in range(images.shape[0])]
    return ImageSet(images=images, files=files, source=f"generator:{name}")


def _open_folder(out: Path, cfg: StudyConfig, overwrite: bool, data_label: str | None) -> RunFolder:
    folder = RunFolder(out)
    if folder.path.is_dir() and folder.manifest_path.exists() and not overwrite:
        old = folder.manifest()
        if old.get("command") != "study":
            raise FileExistsError(
                f"{out} holds a '{old.get('command')}' run, not a study; choose another --out or pass --overwrite."
            )
        if folder.is_finished():
            raise FileExistsError(
                f"{out} already holds a finished study; pass --overwrite to redo it or choose another --out."
            )
    elif folder.path.is_dir() and folder_contents(folder.path) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty and is not a study folder; choose another --out or pass --overwrite."
        )
    return folder.start(
        "study", cfg.to_dict(), seed=cfg.study.seed, device=resolve_device(cfg.study.device),
        data=data_label, overwrite=overwrite, resume=not overwrite,
    )


def run_study(
    config: str | Path | dict[str, Any] | StudyConfig,
    out_dir: str | Path,
    data: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or resume) a whole study into ``out_dir`` and return the path of its report.html."""
    cfg = load_config(config)
    threads = torch.get_num_threads()
    if cfg.study.threads is not None:
        torch.set_num_threads(cfg.study.threads)
    try:
        return _run(cfg, Path(out_dir), data, overwrite, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig, out: Path, data: str | Path | None, overwrite: bool, progress: bool) -> Path:
    echo = _echo(progress)
    t_start = time.perf_counter()
    # The data are checked before the folder is touched, so a bad path leaves nothing behind.
    real, spec = _load_real(cfg, data, progress)
    check_counts(cfg, int(real.images.shape[0]), str(spec))
    folder = _open_folder(out, cfg, overwrite, str(spec))
    data_hash = tensor_digest(real.images)
    folder.update(data_info={
        "source": str(spec), "count": int(real.images.shape[0]), "fingerprint": data_hash,
        "skipped": len(getattr(real, "skipped", []) or []),
    })
    if cfg.text is not None:
        write_text(out / CONFIG_COPY, cfg.text)
    write_json(out / PLAN_FILE, _plan(cfg, real, spec, data_hash))
    steps = StepLog(out, echo)
    echo(f"Study [bold]{cfg.study.name}[/]: {len(cfg.generators)} generators, "
         f"{real.images.shape[0]} real images from {spec} -> {out}")

    steps.run("spectra/real", {"data": data_hash},
              lambda _r: _spectra_step(out, "real", real.images, cfg), _spectra_outputs("real"))

    gen_hashes: dict[str, str] = {}
    for gen in cfg.generators:
        gen_hashes[gen.name] = _generator_steps(cfg, gen, out, real.images, data_hash, steps, progress)

    if cfg.transfer is not None:
        t = cfg.transfer
        how = {"jobs"}  # options that change how the matrix is computed, not its values
        what = {k: v for k, v in dataclasses.asdict(t).items() if k not in how}
        inputs = {"data": data_hash, "fakes": gen_hashes, "transfer": what, "seed": cfg.study.seed}
        steps.run("transfer", inputs, lambda resume: _transfer_step(cfg, out, real, resume, progress),
                  ["transfer/matrix.csv"])

    from pipelines.report import write_report

    folder.update(elapsed_s=round(time.perf_counter() - t_start, 1))
    # The page is written as the finished study's report; the manifest says "finished" only
    # once the page exists, so an interrupted report is redone by the next run.
    report = write_report(out, finished=True)
    folder.finish(elapsed_s=round(time.perf_counter() - t_start, 1))
    return report


def check_counts(cfg: StudyConfig, n_real: int, source: str) -> None:
    """Stop before any work when there are too few real images or fakes for the study's statistics and splits."""
    if n_real < 2:
        raise ValueError(f"The study needs at least 2 real images, but {source} gave {n_real}; give more images.")
    if cfg.transfer is None:
        return
    from pipelines.data import split_indices

    # The transfer step splits every set into train / validation / test and needs 2 images in each part.
    for n, what in ((n_real, f"real images from {source}"), (cfg.generate.n, "fakes per generator ([generate] n)")):
        sizes = [len(ix) for ix in split_indices(n, cfg.transfer.fractions)]
        if min(sizes) < 2:
            raise ValueError(
                f"The transfer step splits the {n} {what} into {sizes} (train, validation, test) but needs at "
                "least 2 in each; give more images or change [transfer] fractions."
            )


def _plan(cfg: StudyConfig, real: Any, spec: Any, data_hash: str) -> dict[str, Any]:
    """What the report needs to know about the study (written as study.json)."""
    return {
        "name": cfg.study.name,
        "source": cfg.source,
        "resolution": cfg.study.resolution,
        "data": {"source": str(spec), "count": int(real.images.shape[0]), "fingerprint": data_hash},
        "generators": [
            {"name": g.name, "arch": g.arch, "upsampler": g.upsampler, "spectral_d": g.spectral_d,
             "steps": g.train.get("steps"), "width": g.train.get("width"), "train": g.train}
            for g in cfg.generators
        ],
        "generate": dataclasses.asdict(cfg.generate),
        "quality": dataclasses.asdict(cfg.quality),
        "transfer": dataclasses.asdict(cfg.transfer) if cfg.transfer else None,
    }


def _spectra_outputs(name: str) -> list[str]:
    return [f"spectra/{name}.npz", f"samples/{name}.png"]


def _spectra_step(out: Path, name: str, images: torch.Tensor, cfg: StudyConfig) -> None:
    save_arrays(out / "spectra" / f"{name}.npz", **mean_spectra(images))
    write_grid(images, out / "samples" / f"{name}.png", cfg.generate.grid)


def _generator_steps(cfg: StudyConfig, gen: GeneratorSpec, out: Path, real: torch.Tensor,
                     data_hash: str, steps: StepLog, progress: bool) -> str:
    """Train, generate, spectra and quality of one generator; returns its fakes' hash."""
    from gans.training import train

    run_dir = out / "generators" / gen.name
    tcfg = train_config(cfg, gen)
    hashed = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in TRAIN_KEYS_NOT_HASHED}

    def do_train(resume: bool) -> None:
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        can_resume = resume and (run_dir / "checkpoint.pt").exists()
        train(tcfg, real, run_dir, resume=can_resume, progress=progress)

    h_train = steps.run(f"train/{gen.name}", {"data": data_hash, "train": hashed}, do_train,
                        [f"generators/{gen.name}/checkpoint.pt"])

    g = cfg.generate
    seed = cfg.study.seed if g.seed is None else g.seed
    fakes_file = out / "fakes" / f"{gen.name}.npy"

    def do_generate(_resume: bool) -> None:
        from gans.sampling import generate_tensor, load_generator, write_fake_set

        device = resolve_device(cfg.study.device)
        G, _meta = load_generator(run_dir, device=device)
        fakes = generate_tensor(G, g.n, seed=seed, batch_size=g.batch_size, device=device).cpu()
        save_array(fakes_file, fakes.numpy())
        write_grid(fakes, out / "samples" / f"{gen.name}.png", g.grid)
        if g.save_fakes:
            write_fake_set(run_dir / "checkpoint.pt", g.n, out / "fakes" / gen.name, seed=seed,
                           batch_size=g.batch_size, device=device, progress=progress)

    gen_outputs = [f"fakes/{gen.name}.npy", f"samples/{gen.name}.png"]
    if g.save_fakes:
        gen_outputs.append(f"fakes/{gen.name}/manifest.json")
    h_gen = steps.run(f"generate/{gen.name}", {"train": h_train, "generate": dataclasses.asdict(g)},
                      do_generate, gen_outputs)

    steps.run(f"spectra/{gen.name}", {"fakes": h_gen},
              lambda _r: save_arrays(out / "spectra" / f"{gen.name}.npz", **mean_spectra(load_fakes(out, gen.name))),
              [f"spectra/{gen.name}.npz"])

    q = cfg.quality
    if q.spectral or q.fid or q.kid:
        steps.run(f"quality/{gen.name}", {"fakes": h_gen, "data": data_hash, "quality": dataclasses.asdict(q)},
                  lambda _r: _quality_step(cfg, out, gen.name, real), [f"quality/{gen.name}.json"])
    return h_gen


def load_fakes(run_dir: str | Path, name: str) -> torch.Tensor:
    """The uint8 fakes (N, 3, R, R) a study generated for generator ``name``."""
    path = Path(run_dir) / "fakes" / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rerun the study to regenerate the fakes of {name!r}.")
    return torch.from_numpy(np.load(path, allow_pickle=False))


def _quality_step(cfg: StudyConfig, out: Path, name: str, real: torch.Tensor) -> None:
    """Spectral fidelity, plus FID/KID when asked and possible (else the reason is recorded)."""
    q = cfg.quality
    fake = load_fakes(out, name)
    result: dict[str, Any] = {}
    if q.spectral:
        from detectors.fidelity import spectral_fidelity

        result.update(spectral_fidelity(real, fake))
    if q.fid or q.kid:
        try:
            from pipelines.quality import quality_metrics

            kwargs: dict[str, Any] = {"fid": q.fid, "kid": q.kid, "spectral": False, "device": cfg.study.device}
            if q.feature_extractor_weights:
                kwargs["feature_extractor_weights"] = q.feature_extractor_weights
            result.update(quality_metrics(real, fake, **kwargs))
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            # Offline machines have no Inception weights: record why and keep going.
            result["fid_kid_unavailable"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    write_json(out / "quality" / f"{name}.json", _plain(result))


def _plain(obj: Any) -> Any:
    """Numbers from numpy/torch as plain Python floats, so JSON stays readable."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)):
        return obj.item()
    return obj


def _transfer_step(cfg: StudyConfig, out: Path, real: Any, resume: bool, progress: bool) -> None:
    from pipelines.transfer import run_transfer

    t = cfg.transfer
    assert t is not None
    # No clean start needed: run_transfer keeps each finished cell with a hash of its images and
    # options, and recomputes exactly the cells whose inputs changed.
    del resume
    target = out / "transfer"
    fakes = {g.name: _image_set(load_fakes(out, g.name), g.name) for g in cfg.generators}
    run_transfer(real, fakes, list(t.detectors), target, rows=tuple(t.rows), seed=cfg.study.seed,
                 fractions=tuple(t.fractions), jpeg=t.jpeg, attribute=t.attribute, progress=progress,
                 jobs=t.jobs)

"""A study's config: the TOML schema as pydantic models, and reading it into a ``StudyConfig``.

Config layout (every section but [study] and one of [grid] / [[generators]] is optional)::

    [study]        name, seed, resolution, data, subset, n_real, device, threads, executor, jobs
    [data]         preprocess ("resize" or "crop"), held_out (one-folder data only)
    [train]        defaults for every generator: any field of gans.training.TrainConfig
    [grid]         archs x upsamplers x spectral_d, every combination is one generator
    [[generators]] extra explicit variants: name plus any [train] key
    [generate]     n, batch_size, seed, grid, save_fakes
    [quality]      spectral, fid, kid, feature_extractor_weights
    [transfer]     detectors, rows, fractions, jpeg, attribute, seeds, jobs, patches, patch_size, patch_reduce

Each section is a pydantic model with ``extra="forbid"`` and strict types, validated in JSON
mode (TOML's values are JSON's: an array fills a tuple, an integer a float, but 1 is not
true). A wrong key or value stops with one sentence naming the section, the key, the value
and what is expected (for an unknown key: the valid keys).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from detectors.detector import check_spec
from gans.networks import check_arch, check_resolution
from gans.training import TrainConfig
from gans.upsamplers import UPSAMPLERS, check_upsampler
from pipelines.names import NAME_RULE, RESERVED_NAMES, ROW_KINDS, is_plain_name
from pipelines.study.executors import EXECUTORS

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

# Fields of TrainConfig that the [study] section sets for every generator.
STUDY_OWNED_TRAIN_KEYS = ("resolution", "device")
# Fields of TrainConfig that change how often things are logged, not what is learned.
TRAIN_KEYS_NOT_HASHED = ("ckpt_every", "sample_every", "log_every", "device")
# Fields added to TrainConfig after studies existed, with the default that reproduces the
# earlier behaviour: hashed only when set to something else, so existing study folders resume
# instead of retraining every generator. Add each new training field here with its default.
TRAIN_KEYS_HASHED_WHEN_SET: dict[str, Any] = {"shortcut": "1x1", "alias_free": False}


def hashed_train_options(options: dict[str, Any]) -> dict[str, Any]:
    """The training options that enter a train step's hash (see the two key lists above)."""
    return {k: v for k, v in options.items() if k not in TRAIN_KEYS_NOT_HASHED
            and not (k in TRAIN_KEYS_HASHED_WHEN_SET and v == TRAIN_KEYS_HASHED_WHEN_SET[k])}


# --------------------------------------------------------------------------- the schema


class Section(BaseModel):
    """A TOML table: no unknown keys, no silent type conversions."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StudyOptions(Section):
    """The [study] section: what the study is called, its data, resolution and seed."""

    name: str = "study"
    seed: int = 0
    resolution: int = 32
    data: str | None = None  # "embedded", a folder, or unset for $FORGELAB_DATA
    subset: str | None = None  # sub-folder of the data folder; "train" when it holds train/ and val/ (ImageWoof)
    n_real: int | None = None  # how many real images to load (None: all; embedded: its default)
    device: str = "auto"
    threads: int | None = None  # torch intra-op CPU threads during the study (None: torch's default)
    executor: str = "local"  # "local" (this process) or "ray" (Ray tasks); in no step hash
    jobs: int = Field(default=1, ge=1)  # local executor: independent steps run at once in worker processes


class DataOptions(Section):
    """The [data] section: how real images become R x R and which of them the GANs never see.

    ``preprocess``: "resize" (antialiased, the default) or "crop" (the centred R x R square of
    native pixels at an even offset; see :mod:`pipelines.data.images`).
    ``held_out``: for data in one folder (not ImageWoof's train/ + val/ layout, not the
    embedded photos), the fraction of the real images kept from GAN training and used as the
    detectors' real test images; the GANs and the detectors' real training images are the
    rest. 0 trains the GANs on every image and tests the detectors on a split of the same
    images (the behaviour before held-out sets; only for resuming old studies).
    ``align``: real images are native crops on the JPEG grid (``preprocess`` is then unused) and,
    if they are JPEG, the detectors see every real and fake image re-encoded at their lowest
    quality (at most ``[transfer] jpeg``) with one chroma subsampling (see :mod:`pipelines.data.align`).
    """

    preprocess: Literal["resize", "crop"] = "resize"
    held_out: float = 0.2
    align: bool = False

    @property
    def mode(self) -> str:
        """How real images are read: ``preprocess``, or "align" (native crops on the JPEG grid) with ``align``."""
        return "align" if self.align else self.preprocess


class GridOptions(Section):
    """The [grid] section: every combination of these lists becomes one generator."""

    archs: list[str] | None = None  # None: the [train] arch
    upsamplers: list[str] | str = Field(default_factory=list)  # "all": every registered upsampler
    spectral_d: list[bool] = Field(default_factory=lambda: [False])


class GenerateOptions(Section):
    """The [generate] section: how many fakes each generator makes and what is kept on disk."""

    n: int = 1000
    batch_size: int = 256
    seed: int | None = None  # None: the study seed
    grid: int = 64  # images in each sample grid PNG
    save_fakes: bool = False  # also write every fake as a PNG fake set (fakes/<name>/)


class QualityOptions(Section):
    """The [quality] section: spectral fidelity always, FID/KID when Inception weights exist."""

    spectral: bool = True
    fid: bool = False
    kid: bool = False
    feature_extractor_weights: str | None = None


class TransferOptions(Section):
    """The [transfer] section: detectors trained on each generator's fakes, tested on all."""

    detectors: list[str] = Field(default_factory=list)
    rows: list[str] = Field(default_factory=lambda: ["each"])
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    jpeg: int | None = None
    attribute: bool = False
    seeds: int = Field(default=1, ge=1)  # repeats of every cell, seeds seed..seed+K-1: mean, sd, n in the matrix
    jobs: int = 1  # cells fitted at once, in worker processes (how, not what: not part of the step hash)
    patches: int | None = Field(default=None, ge=1)  # K crops per image (a square) of patch_size px, aggregated
    patch_size: int | None = Field(default=None, ge=4)
    patch_reduce: str = "mean"  # mean (of logits) or max
    # Per detector spec, keyword arguments for its Detector: classifier parameters (epochs=10),
    # feature_options ({wavelet = "bior1.3"}). Part of every cell's hash.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


# Detector arguments a study sets itself, so [transfer] options may not.
STUDY_OWNED_DETECTOR_KEYS = ("seed", "device", "patches", "patch_size", "patch_reduce", "patch_align")


class TopLevel(Section):
    """The top level of a study config: its sections (each checked by its own model)."""

    study: Any = None
    data: Any = None
    train: Any = None
    grid: Any = None
    generators: Any = None
    generate: Any = None
    quality: Any = None
    transfer: Any = None


SECTIONS = tuple(TopLevel.model_fields)


def train_keys() -> list[str]:
    """Keys allowed in [train] and [[generators]]: the TrainConfig fields the study does not set."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in STUDY_OWNED_TRAIN_KEYS]


@cache
def _train_section(with_name: bool) -> type[Section]:
    """[train] (or a [[generators]] entry, which also takes a name) built from TrainConfig's type hints."""
    hints = get_type_hints(TrainConfig)  # the annotations may be strings (`from __future__`)
    fields: dict[str, Any] = {"name": (str | None, None)} if with_name else {}
    fields.update({k: (hints[k], None) for k in train_keys()})
    return create_model("GeneratorEntry" if with_name else "TrainSection", __base__=Section, **fields)


def _train_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# --------------------------------------------------------------------------- errors for people


_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "tuple_type": "a list", "dict_type": "a table of keys", "model_type": "a table of keys",
}
_PLURAL = {"an integer": "integers", "a number": "numbers", "true or false": "booleans", "a string": "strings"}


def _expected(error: dict[str, Any]) -> str:
    """What a pydantic error says the value should be, in a config author's words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind in ("too_short", "too_long"):
        n = ctx.get("max_length") if kind == "too_long" else ctx.get("min_length")
        return f"a list of {n} values"
    word = _WORDS.get(kind, str(error["msg"]).removeprefix("Input should be ").rstrip("."))
    if any(isinstance(part, int) for part in error["loc"][1:]):  # an item of a list was wrong
        return f"a list of {_PLURAL.get(word, 'values')}"
    return word


def _config_error(error: ValidationError, table: dict[str, Any], model: type[BaseModel], where: str) -> ValueError:
    """The first problem of ``error`` as one sentence naming the key, the value and what is expected."""
    errors = error.errors()
    key = str(errors[0]["loc"][0])
    if errors[0]["type"] == "extra_forbidden":
        return ValueError(f"Unknown key {key!r} in {where}; valid keys are: {', '.join(model.model_fields)}.")
    # A union (list of strings or "all") fails once per member: name every member once.
    words = list(dict.fromkeys(_expected(e) for e in errors if str(e["loc"][0]) == key))
    field = model.model_fields.get(key)
    for hint in (field.annotation, *get_args(field.annotation)) if field else ():
        args = get_args(hint)
        if get_origin(hint) is tuple and args and Ellipsis not in args:  # pairs and triples say how long
            words = [f"a list of {len(args)} {_PLURAL.get(_WORDS.get(f'{args[0].__name__}_type', ''), 'values')}"]
    return ValueError(f"{where} {key} = {table[key]!r} must be {' or '.join(words)}; fix it in the config.")


def section(model: type[Section], table: Any, where: str) -> Any:
    """The validated ``model`` of one TOML table (None: all defaults)."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ValueError(
            f"{where} must be a table of keys (for example [{where.strip('[]')}]), not {type(table).__name__}."
        )
    try:
        return model.model_validate_json(json.dumps(table, default=str))
    except ValidationError as e:
        raise _config_error(e, table, model, where) from None


# --------------------------------------------------------------------------- the resolved config


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
    data: DataOptions = dataclasses.field(default_factory=DataOptions)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (what the manifest stores)."""
        return {
            "study": self.study.model_dump(),
            "data": self.data.model_dump(),
            "train": dict(self.train),
            "generators": [{"name": g.name, **g.train} for g in self.generators],
            "generate": self.generate.model_dump(),
            "quality": self.quality.model_dump(),
            "transfer": self.transfer.model_dump() if self.transfer else None,
        }


def train_config(cfg: StudyConfig, gen: GeneratorSpec) -> TrainConfig:
    """The validated gans.training.TrainConfig of one generator of the study."""
    return train_config_from(cfg.study, gen)


def train_config_from(study: StudyOptions, gen: GeneratorSpec) -> TrainConfig:
    """TrainConfig of ``gen`` with the resolution and device of the [study] section."""
    return TrainConfig.from_dict({**gen.train, "resolution": study.resolution, "device": study.device})


# --------------------------------------------------------------------------- parsing


def _check_names(opts: dict[str, Any]) -> None:
    """Architecture and upsampler names checked against their registries (early, clear errors)."""
    if "arch" in opts:
        check_arch(opts["arch"])
    if "upsampler" in opts:
        check_upsampler(opts["upsampler"])


def _generator_name(arch: str, upsampler: str, spectral_d: bool, several_archs: bool) -> str:
    parts = ([arch] if several_archs else []) + [upsampler] + (["sd"] if spectral_d else [])
    return "-".join(parts)


def _parse_study(raw: dict[str, Any]) -> StudyOptions:
    study = section(StudyOptions, raw.get("study"), "[study]")
    if study.n_real is not None and study.n_real < 2:
        raise ValueError(f"[study] n_real = {study.n_real} must be at least 2; fix it in the config.")
    if study.threads is not None and study.threads < 1:
        raise ValueError(f"[study] threads = {study.threads} must be at least 1 (or left out for torch's default).")
    if not is_plain_name(study.name):
        raise ValueError(f"[study] name = {study.name!r} must {NAME_RULE}; rename it.")
    check_resolution(study.resolution)
    if study.executor not in EXECUTORS:
        raise ValueError(f"[study] executor = {study.executor!r} is not known; choose one of: {', '.join(EXECUTORS)}.")
    return study


def _parse_generators(raw: dict[str, Any], base: dict[str, Any], source: str) -> list[GeneratorSpec]:
    """The [grid] combinations, then the [[generators]] entries, each with its full training options."""
    generators: list[GeneratorSpec] = []
    if "grid" in raw:
        grid = section(GridOptions, raw["grid"], "[grid]")
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
        entry = section(_train_section(True), table, f"[[generators]] #{i + 1}").model_dump(exclude_unset=True)
        name = entry.pop("name", None)
        _check_names(entry)
        merged = {**base, **entry}
        if not merged.get("upsampler"):
            raise ValueError(f"[[generators]] #{i + 1} has no upsampler; add upsampler = \"nearest\" (or another kind).")
        name = name or _generator_name(merged["arch"], merged["upsampler"], bool(merged.get("spectral_d")), several_archs)
        generators.append(GeneratorSpec(name, merged))

    if not generators:
        raise ValueError(
            f"{source} defines no generators; add a [grid] with upsamplers = [...] or [[generators]] entries."
        )
    return generators


def _check_generators(study: StudyOptions, generators: list[GeneratorSpec]) -> None:
    """Every name plain and unique, every generator's TrainConfig valid."""
    seen: set[str] = set()
    for g in generators:
        if not is_plain_name(g.name) or g.name in RESERVED_NAMES:
            raise ValueError(
                f"Generator name {g.name!r} is not allowed; it must {NAME_RULE} (and not be {' or '.join(RESERVED_NAMES)})."
            )
        if g.name in seen:
            raise ValueError(f"Two generators are both named {g.name!r}; give the [[generators]] entry its own name = \"...\".")
        seen.add(g.name)
        try:  # TrainConfig.validate checks every training option (ranges, losses, devices)
            train_config_from(study, g)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Generator {g.name!r}: {e}") from None


def _parse_data(raw: dict[str, Any]) -> DataOptions:
    data = section(DataOptions, raw.get("data"), "[data]")
    if not 0 <= data.held_out < 1:
        raise ValueError(f"[data] held_out = {data.held_out} must be a fraction from 0 (none) up to but not including 1.")
    return data


def _parse_generate(raw: dict[str, Any]) -> GenerateOptions:
    generate = section(GenerateOptions, raw.get("generate"), "[generate]")
    for key in ("n", "batch_size", "grid"):
        if getattr(generate, key) <= 0:
            raise ValueError(f"[generate] {key} = {getattr(generate, key)} must be positive; fix it in the config.")
    return generate


def _parse_transfer(raw: dict[str, Any], n_generators: int) -> TransferOptions | None:
    if "transfer" not in raw:
        return None
    transfer = section(TransferOptions, raw["transfer"], "[transfer]")
    if not transfer.detectors:
        raise ValueError("[transfer] detectors is empty; list at least one, e.g. detectors = [\"radial:svm\"].")
    for spec in transfer.detectors:
        check_spec(spec)
    for row in transfer.rows:
        if row not in ROW_KINDS:
            raise ValueError(f"[transfer] rows contains {row!r}; choose from: {', '.join(ROW_KINDS)}.")
    if transfer.patches is not None:
        from detectors.patches import check_patches

        try:
            check_patches(transfer.patches, transfer.patch_reduce)
        except ValueError as e:
            raise ValueError(f"[transfer] {e}") from None
        if transfer.patch_size is None:
            raise ValueError("[transfer] patches needs patch_size, the side of each crop in pixels.")
    if abs(sum(transfer.fractions) - 1.0) > 1e-6 or min(transfer.fractions) <= 0:
        raise ValueError(
            f"[transfer] fractions = {list(transfer.fractions)} must be three positive numbers (train, validation, test) summing to 1."
        )
    if transfer.jpeg is not None and not 1 <= transfer.jpeg <= 100:
        raise ValueError(f"[transfer] jpeg = {transfer.jpeg} must be a JPEG quality from 1 to 100.")
    if transfer.attribute and n_generators < 2:
        raise ValueError("[transfer] attribute = true needs at least two generators to tell apart.")
    if transfer.attribute:
        from detectors.detector import supports_attribution

        if not any(supports_attribution(d) for d in transfer.detectors):
            raise ValueError("[transfer] attribute = true needs a detector that can tell sources apart, and every one "
                             "listed is binary-only (deviation); add one, e.g. \"radial:svm\", or set attribute = false.")
    _check_detector_options(transfer)
    return transfer


def _check_detector_options(transfer: TransferOptions) -> None:
    """[transfer] options: each key a listed detector, each value arguments its Detector accepts."""
    from detectors.detector import Detector

    for spec, opts in list(transfer.options.items()):
        if spec not in transfer.detectors:
            # A valid detector that is not listed (say, after --set transfer.detectors=...) is left
            # out: its options have no effect and no place in any hash. A misspelt one is an error.
            try:
                check_spec(spec)
            except ValueError as e:
                raise ValueError(f"[transfer] options names {spec!r}: {e}") from None
            del transfer.options[spec]
            continue
        owned = sorted(set(opts) & set(STUDY_OWNED_DETECTOR_KEYS))
        if owned:
            raise ValueError(f"[transfer] options for {spec!r} sets {', '.join(owned)}, which the study sets itself "
                             "([study] seed and device, [transfer] patches); remove it there.")
        try:
            clf = Detector(spec, **opts).classifier
            if hasattr(clf, "validate_params"):  # the neural classifiers check their values at fit; check them now
                clf.validate_params()
        except (TypeError, ValueError) as e:
            raise ValueError(f"[transfer] options for {spec!r}: {e}") from None


def parse_config(raw: dict[str, Any], source: str = "<dict>", text: str | None = None) -> StudyConfig:
    """Validate a parsed TOML dict and resolve it into a StudyConfig (the list of generators)."""
    section(TopLevel, raw, f"the top level of {source}")
    study = _parse_study(raw)
    train = section(_train_section(False), raw.get("train"), "[train]").model_dump(exclude_unset=True)
    _check_names(train)
    defaults = {k: v for k, v in _train_defaults().items() if k not in STUDY_OWNED_TRAIN_KEYS}
    base = {**defaults, **train}
    if "seed" not in train:
        base["seed"] = study.seed
    generators = _parse_generators(raw, base, source)
    _check_generators(study, generators)
    generate = _parse_generate(raw)
    quality = section(QualityOptions, raw.get("quality"), "[quality]")
    transfer = _parse_transfer(raw, len(generators))
    data = _parse_data(raw)
    return StudyConfig(study, train, generators, generate, quality, transfer, raw, source, text, data)


def packaged_configs() -> list[str]:
    """Names of the study configs shipped with forgelab (usable instead of a path)."""
    return sorted(p.name[:-5] for p in resources.files("configs").iterdir() if p.name.endswith(".toml"))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` overrides applied (values in TOML syntax)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        target, sep, text = item.partition("=")
        sect, dot, key = target.strip().partition(".")
        if not sep or not dot or not sect or not key:
            raise ValueError(f"Override {item!r} must look like section.key=value, e.g. train.steps=1500.")
        if sect == "generators":
            raise ValueError("Overrides cannot reach [[generators]] entries; set the key in [train] or edit the config.")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word such as a path or a name is a string
        table = out.setdefault(sect, {})
        if not isinstance(table, dict):
            raise ValueError(f"Override {item!r}: [{sect}] is not a table of keys.")
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

"""Search spaces: TOML files (one per dataset in search_spaces/) -> Ray Tune domains.

Format (every key is a `TrialConfig` field; see regene_search/config.py):

    description = "what this space is for"        # optional
    [params]                                       # searched; at least one
    blocks     = { choice = [2, 3] }               # any listed value (int, float, str, bool)
    lr         = { loguniform = [1e-4, 5e-3] }     # float, log-uniform on [low, high]
    dropout    = { uniform = [0.0, 0.3] }          # float, uniform on [low, high]
    epochs     = { randint = [1, 3] }              # int, low..high, BOTH ends included
    [fixed]                                        # the same value in every trial
    augment = false

Each file is validated completely when loaded, so a typo fails before any trial starts: every
problem becomes a one-line `SpaceError` naming the file, the key and the problem.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import LATENT_ACTIVATIONS, TRIAL_FIELD_TYPES
from ..data.names import DatasetRef
from ..errors import DataError, SpaceError


def _spaces_dir() -> Path:
    """The shipped search spaces: package data `regene_search/search_spaces/` once installed, the
    repository's top-level `search_spaces/` in a source checkout (an editable install, the tests)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "search_spaces"
    return installed if any(installed.glob("*.toml")) else package.parent / "search_spaces"


SPACES_DIR = _spaces_dir()
DOMAIN_KINDS = ("choice", "uniform", "loguniform", "randint")
TOP_LEVEL_KEYS = ("description", "params", "fixed")

_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= sys.float_info.max,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}
_KINDS_FOR_TYPE = {"int": "randint or choice", "float": "uniform, loguniform or choice"}
_TYPE_NAMES = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false"}

# Values a trial would reject, or could not run in any memory; caught here so the error names the
# file and key before Ray starts. The upper limits sit far beyond the paper's region (latent 2048).
_BOUNDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "blocks": (lambda v: 1 <= v <= 6, ">= 1 and <= 6 (each block halves the image; 64 px allows 6)"),
    "convs_per_block": (lambda v: 1 <= v <= 16, ">= 1 and <= 16"),
    "base_width": (lambda v: 1 <= v <= 1024, ">= 1 and <= 1024"),
    "latent_dim": (lambda v: 1 <= v <= 65536, ">= 1 and <= 65536"),
    "batch_size": (lambda v: 1 <= v <= 65536, ">= 1 and <= 65536"),
    "epochs": (lambda v: 1 <= v <= 100_000, ">= 1 and <= 100000"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "latent_activation": (lambda v: v in LATENT_ACTIVATIONS, f"one of {', '.join(LATENT_ACTIVATIONS)}"),
}


@dataclass(frozen=True)
class Domain:
    """One searched hyperparameter: `values` for a choice, else the closed range [low, high]."""

    kind: str
    values: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None

    def to_tune(self) -> Any:
        from ray import tune  # loading a space must not need Ray; only handing it to Tune does

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(self.low, self.high + 1)  # Tune's upper bound is exclusive

    def sample(self, rng: Any) -> Any:
        """One value drawn with a numpy `Generator` (randint includes `high`, as in the TOML)."""
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return int(rng.integers(self.low, self.high + 1))

    def default(self) -> Any:
        """A representative value: first choice, arithmetic or geometric midpoint, or low."""
        if self.kind == "choice":
            return self.values[0]
        if self.kind == "uniform":
            return self.low / 2 + self.high / 2  # no overflow near the float limit
        if self.kind == "loguniform":
            return math.sqrt(self.low) * math.sqrt(self.high)
        return self.low

    def to_json(self) -> dict[str, list[Any]]:
        """The TOML spelling, e.g. {"loguniform": [0.0001, 0.005]}."""
        return {self.kind: list(self.values) if self.kind == "choice" else [self.low, self.high]}


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: what to search (`params`) and what to hold (`fixed`)."""

    path: str
    params: Mapping[str, Domain]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_tune(self) -> dict[str, Any]:
        """`param_space` for `ray.tune.Tuner`: Tune domains plus fixed values as constants."""
        return {name: domain.to_tune() for name, domain in self.params.items()} | dict(self.fixed)

    def to_json(self) -> dict[str, Any]:
        """The file's content as plain JSON (for run.json); `from_json` reads it back."""
        return {
            "path": self.path,
            "description": self.description,
            "params": {name: domain.to_json() for name, domain in self.params.items()},
            "fixed": dict(self.fixed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Rebuild (and re-validate) a space saved by `to_json`, e.g. when resuming a run."""
        source = str(data.get("path", "<json>"))
        return _parse({key: value for key, value in data.items() if key != "path"}, source)

    def largest(self, name: str) -> Any:
        """The largest value `name` takes in this space (searched or fixed), or None if it is left at its default."""
        if name in self.fixed:
            return self.fixed[name]
        domain = self.params.get(name)
        if domain is None:
            return None
        return max(domain.values) if domain.kind == "choice" else domain.high

    def check_fits(self, image_size: int) -> None:
        """Refuse a space whose deepest encoder would pool `image_size` px images below 1 px."""
        blocks = self.largest("blocks")
        if image_size and blocks is not None and image_size >> blocks < 1:
            raise SpaceError(
                f"{self.path}: blocks = {blocks} pools a {image_size}px image below 1 px; this dataset allows at most {image_size.bit_length() - 1}"
            )

    def default_config(self) -> dict[str, Any]:
        """A valid trial point (each domain's `default()`) with the fixed values, for smoke tests."""
        return {name: domain.default() for name, domain in self.params.items()} | dict(self.fixed)


def load_space(path: Path | str) -> SearchSpace:
    """Read and validate a search-space TOML file; any problem raises a one-line SpaceError."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpaceError(f"{source}: cannot read search space: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{source}: {_toml_error(str(exc))}") from None
    except RecursionError:
        raise SpaceError(f"{source}: invalid TOML: nested too deeply") from None
    return _parse(data, source)


def default_space_path(dataset: DatasetRef | str) -> Path:
    """search_spaces/<dataset>.toml (shipped in the package); any `imagefolder:PATH` uses imagefolder.toml."""
    try:
        path = SPACES_DIR / f"{DatasetRef.of(dataset).family}.toml"
    except DataError:
        path = None
    if path is None or not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.toml")))
        raise SpaceError(f"no search space for dataset {str(dataset)!r} (have: {known}); pass --space FILE.toml")
    return path


def _toml_error(message: str) -> str:
    """tomllib says 'Problem (at line L, column C)' or '(at end of document)'; lead with the place."""
    match = re.fullmatch(r"(.*) \(at (?:line (\d+), column (\d+)|(end of document))\)", message)
    if match is None:
        return f"invalid TOML: {message}"
    problem, line, column, end = match.groups()
    return f"{'end of file' if end else f'line {line}, column {column}'}: invalid TOML: {problem}"


class _Invalid(Exception):
    """A problem at one key; `_parse` adds the file name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _parse(data: Mapping[str, Any], source: str) -> SearchSpace:
    try:
        return _parse_tables(data, path=source)
    except _Invalid as exc:
        raise SpaceError(f"{source}: {exc}") from None


def _parse_tables(data: Mapping[str, Any], *, path: str) -> SearchSpace:
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _Invalid(_key(key), f"unknown top-level key (expected {', '.join(TOP_LEVEL_KEYS)})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _Invalid("description", f"must be a string, got {_show(description)}")
    raw_params, raw_fixed = data.get("params", {}), data.get("fixed", {})
    for table, raw in (("params", raw_params), ("fixed", raw_fixed)):
        if not isinstance(raw, Mapping):
            raise _Invalid(table, f"must be a table, got {_show(raw)}")
    if not raw_params:
        raise _Invalid("params", "no hyperparameter to search (add at least one under [params])")

    params = {}
    for name, spec in raw_params.items():
        where = f"params.{_key(name)}"
        _check_field(name, where)
        params[name] = _domain(name, spec, where)
    fixed = {}
    for name, value in raw_fixed.items():
        where = f"fixed.{_key(name)}"
        _check_field(name, where)
        if name in params:
            raise _Invalid(where, "also under [params]; a hyperparameter is either searched or fixed")
        fixed[name] = _value(name, value, "value", where)
    return SearchSpace(path=path, params=params, fixed=fixed, description=description)


def _check_field(name: str, where: str) -> None:
    if name not in TRIAL_FIELD_TYPES:
        raise _Invalid(where, f"unknown hyperparameter (known: {', '.join(TRIAL_FIELD_TYPES)})")


def _domain(name: str, spec: Any, where: str) -> Domain:
    kinds = "{ " + " | ".join(f"{kind} = [...]" for kind in DOMAIN_KINDS) + " }"
    if not isinstance(spec, Mapping):
        raise _Invalid(where, f"expected a domain table {kinds}, got {_show(spec)} (put constants under [fixed])")
    if len(spec) != 1:
        raise _Invalid(where, f"expected exactly one domain {kinds}, got {len(spec)} keys")
    ((kind, args),) = spec.items()
    if kind not in DOMAIN_KINDS:
        raise _Invalid(where, f"unknown domain {_key(kind)} (expected one of {', '.join(DOMAIN_KINDS)})")
    if not isinstance(args, list):
        raise _Invalid(where, f"{kind} expects a list, got {_show(args)}")

    if kind == "choice":
        if not args:
            raise _Invalid(where, "choice list is empty")
        values = tuple(_value(name, value, "choice value", where) for value in args)
        if len(set(values)) != len(values):
            raise _Invalid(where, f"choice list has duplicates: {_show(args)}")
        return Domain(kind, values=values)

    field_type = "int" if kind == "randint" else "float"
    if TRIAL_FIELD_TYPES[name] != field_type:
        hint = _KINDS_FOR_TYPE.get(TRIAL_FIELD_TYPES[name], "choice")
        raise _Invalid(where, f"{kind} needs {field_type} values but {name} is {TRIAL_FIELD_TYPES[name]} (use {hint})")
    if len(args) != 2:
        raise _Invalid(where, f"{kind} expects [low, high], got {_show(args)}")
    low, high = (_typed(name, value, f"{kind} {end}", where) for value, end in zip(args, ("low", "high")))
    if kind == "loguniform" and low <= 0:
        raise _Invalid(where, f"loguniform low must be > 0 (got {_show(args[0])})")
    if low >= high:
        raise _Invalid(where, f"{kind} low must be < high (got {_show(args[0])}, {_show(args[1])})")
    _check_range(name, low, f"{kind} low", where)
    _check_range(name, high, f"{kind} high", where)
    return Domain(kind, low=low, high=high)


def _value(name: str, value: Any, what: str, where: str) -> Any:
    """Check `value` fits field `name` (type and range) and return it in the field's type."""
    value = _typed(name, value, what, where)
    _check_range(name, value, what, where)
    return value


def _typed(name: str, value: Any, what: str, where: str) -> Any:
    field_type = TRIAL_FIELD_TYPES[name]
    if not _TYPE_CHECKS[field_type](value):
        raise _Invalid(where, f"{what} must be {_TYPE_NAMES[field_type]} for {name}, got {_show(value)}")
    return float(value) if field_type == "float" else value


def _check_range(name: str, value: Any, what: str, where: str) -> None:
    in_range, bound = _BOUNDS.get(name, (lambda v: True, ""))
    if not in_range(value):
        raise _Invalid(where, f"{what} {_show(value)} not allowed: {name} must be {bound}")


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Search-space TOML files: the shipped ones, every validation error, and a fuzzed parser."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray.tune.search import sample

from regene_search.config import TRIAL_FIELD_TYPES, TrialConfig
from regene_search.errors import SpaceError
from regene_search.config import LATENT_ACTIVATIONS, EncoderConfig
from regene_search.search.space import (
    DOMAIN_KINDS,
    SPACES_DIR,
    Domain,
    SearchSpace,
    default_space_path,
    load_space,
)

# Image size of each shipped space's dataset (imagefolder: the smallest it may load).
SHIPPED = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "celeba": 64, "shapes": 32, "imagefolder": 28}


# shipped spaces


def test_every_dataset_has_a_space() -> None:
    assert {path.stem for path in SPACES_DIR.glob("*.toml")} == set(SHIPPED)


@pytest.mark.parametrize("dataset", sorted(SHIPPED))
def test_shipped_space_loads_and_converts(dataset: str) -> None:
    space = load_space(default_space_path(dataset))
    tuned = space.to_tune()
    assert set(tuned) == set(space.params) | set(space.fixed)
    for name in space.params:
        assert isinstance(tuned[name], sample.Domain), name
    for name, value in space.fixed.items():
        assert tuned[name] == value
    json.dumps(space.to_json())
    assert SearchSpace.from_json(space.to_json()) == space

    trial = TrialConfig.from_dict(space.default_config())
    deepest = max(space.params["blocks"].values) if "blocks" in space.params else trial.blocks
    widest = max(space.params["latent_dim"].values) if "latent_dim" in space.params else trial.latent_dim
    EncoderConfig(image_size=SHIPPED[dataset], channels=3, num_classes=10, blocks=deepest, latent_dim=widest)


def test_cifar10_covers_the_papers_region() -> None:
    params = load_space(default_space_path("cifar10")).params
    assert 2048 in params["latent_dim"].values
    assert 1 in params["convs_per_block"].values
    assert {2, 3, 4} <= set(params["blocks"].values)


def test_default_space_path() -> None:
    assert default_space_path("imagefolder:/data/my images") == SPACES_DIR / "imagefolder.toml"
    assert default_space_path("fashion-mnist").name == "fashion-mnist.toml"
    for bad in ("svhn", "../search_spaces/mnist", ""):
        with pytest.raises(SpaceError, match="no search space for dataset"):
            default_space_path(bad)


def test_randint_is_inclusive_and_defaults_are_inside(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[params]\nepochs = { randint = [1, 3] }\nlr = { loguniform = [1e-4, 1e-2] }\n"
        "dropout = { uniform = [0.0, 0.5] }\nlatent_dim = { choice = [64, 128] }\n"
        "label_smoothing = { choice = [0, 0.1] }\n[fixed]\naugment = false\n"
    )
    space = load_space(path)
    assert space.params["epochs"] == Domain("randint", low=1, high=3)
    assert space.params["label_smoothing"].values == (0.0, 0.1)  # float field: ints become floats
    tuned = space.to_tune()
    assert (tuned["epochs"].lower, tuned["epochs"].upper) == (1, 4)
    assert space.default_config() == {
        "epochs": 1,
        "lr": pytest.approx(1e-3),
        "dropout": 0.25,
        "latent_dim": 64,
        "label_smoothing": 0.0,
        "augment": False,
    }


# validation errors

HEAD = "[params]\nblocks = { choice = [2, 3] }\n"

ERRORS = [
    ("syntax", "[params\nlr = 1", "line 1, column", "invalid TOML"),
    ("syntax-value", HEAD + "lr = { loguniform = [1e-4, }\n", "line 3, column", "invalid TOML"),
    ("syntax-unclosed", HEAD + "lr = { loguniform = [1e-4, 1e-3] ", "end of file", "invalid TOML"),
    ("unknown-key", HEAD + "lrr = { uniform = [0.1, 0.2] }", "params.lrr", "unknown hyperparameter"),
    ("unknown-fixed-key", HEAD + "[fixed]\nseed = 3", "fixed.seed", "unknown hyperparameter"),
    ("unknown-table", HEAD + "[parms]\nlr = 1", "parms", "unknown top-level key"),
    ("unknown-top-key", "name = 'x'\n" + HEAD, "name", "unknown top-level key"),
    ("no-params", "[fixed]\naugment = true", "params", "no hyperparameter to search"),
    ("params-not-table", "params = 3", "params", "must be a table"),
    ("description", "description = 3\n" + HEAD, "description", "must be a string"),
    ("empty-choice", "[params]\nblocks = { choice = [] }", "params.blocks", "choice list is empty"),
    ("duplicate-choice", "[params]\nblocks = { choice = [2, 2] }", "params.blocks", "duplicates"),
    ("uniform-low-high", HEAD + "dropout = { uniform = [0.3, 0.1] }", "params.dropout", "low must be < high"),
    ("randint-equal", HEAD + "epochs = { randint = [2, 2] }", "params.epochs", "low must be < high"),
    ("loguniform-negative", HEAD + "lr = { loguniform = [-1, 0.1] }", "params.lr", "loguniform low must be > 0 (got -1)"),
    ("loguniform-zero", HEAD + "weight_decay = { loguniform = [0, 0.1] }", "params.weight_decay", "> 0 (got 0)"),
    ("range-length", HEAD + "lr = { uniform = [0.1, 0.2, 0.3] }", "params.lr", "expects [low, high]"),
    ("range-not-list", HEAD + "lr = { uniform = 0.1 }", "params.lr", "expects a list"),
    ("not-finite", HEAD + "dropout = { uniform = [0.0, inf] }", "params.dropout", "finite number"),
    ("choice-type", HEAD + 'latent_dim = { choice = [64, "128"] }', "params.latent_dim", "must be an integer"),
    ("bool-for-int", HEAD + "latent_dim = { choice = [true] }", "params.latent_dim", "must be an integer"),
    ("uniform-int-field", "[params]\nblocks = { uniform = [1.0, 3.0] }", "params.blocks", "blocks is int"),
    ("randint-float-field", HEAD + "lr = { randint = [1, 3] }", "params.lr", "lr is float"),
    ("activation", HEAD + 'latent_activation = { choice = ["relu", "swish"] }', "params.latent_activation", "'swish'"),
    ("out-of-range", HEAD + "dropout = { uniform = [0.0, 1.5] }", "params.dropout", "in [0, 1)"),
    ("constant-in-params", HEAD + "lr = 0.1", "params.lr", "under [fixed]"),
    ("two-domains", HEAD + "lr = { uniform = [0.1, 0.2], loguniform = [0.1, 0.2] }", "params.lr", "exactly one"),
    ("unknown-domain", HEAD + "lr = { normal = [0.0, 1.0] }", "params.lr", "unknown domain normal"),
    ("fixed-type", HEAD + '[fixed]\naugment = "yes"', "fixed.augment", "true or false"),
    ("fixed-range", HEAD + "[fixed]\nbatch_size = 0", "fixed.batch_size", ">= 1"),
    ("both-tables", HEAD + "[fixed]\nblocks = 3", "fixed.blocks", "either searched or fixed"),
    ("odd-key", HEAD + '"lr\\nx" = 1', 'params."lr\\nx"', "unknown hyperparameter"),
]


@pytest.mark.parametrize(("case", "text", "key", "problem"), ERRORS, ids=[case for case, *_ in ERRORS])
def test_validation_error(tmp_path: Path, case: str, text: str, key: str, problem: str) -> None:
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}: ")
    assert key in message
    assert problem in message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"missing\.toml: cannot read"):
        load_space(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[params]")
    with pytest.raises(SpaceError, match=r"binary\.toml: not UTF-8"):
        load_space(binary)


# fuzzing: anything must load or raise SpaceError, never another exception

FIELDS = tuple(TRIAL_FIELD_TYPES)
KEYS = st.one_of(st.sampled_from(FIELDS + DOMAIN_KINDS + ("params", "fixed", "description")), st.text(max_size=6))
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-3, 5000),
    st.floats(),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(LATENT_ACTIVATIONS),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8
)
DOMAINS = st.dictionaries(st.sampled_from(DOMAIN_KINDS) | KEYS, st.lists(SCALARS, max_size=4) | VALUES, max_size=2)
DOCUMENTS = st.dictionaries(
    KEYS,
    st.one_of(
        st.dictionaries(st.sampled_from(FIELDS) | KEYS, DOMAINS | VALUES, max_size=5),
        VALUES,
    ),
    max_size=4,
)

# Values each field accepts, to build spaces that must load.
VALID = {
    "blocks": st.integers(1, 6),
    "convs_per_block": st.integers(1, 3),
    "base_width": st.integers(1, 128),
    "latent_dim": st.integers(1, 4096),
    "latent_activation": st.sampled_from(LATENT_ACTIVATIONS),
    "dropout": st.floats(0.0, 0.99),
    "lr": st.floats(1e-8, 1.0),
    "weight_decay": st.floats(0.0, 0.1),
    "label_smoothing": st.floats(0.0, 0.99),
    "batch_size": st.integers(1, 1024),
    "epochs": st.integers(1, 100),
    "augment": st.booleans(),
}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{ " + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


def toml_document(document: dict) -> str:
    """Scalars and arrays at the top, then one [table] per dict."""
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_value(name)}]")
            lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def load_text(text: str) -> SearchSpace:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_space(path)
        except SpaceError as error:
            message = str(error)
            assert len(message.splitlines()) == 1, message
            assert message.startswith(f"{path}: "), message
            raise


def check_space(space: SearchSpace) -> None:
    """A space that loaded is usable: Tune takes it, its default point is a valid trial."""
    assert set(space.params).isdisjoint(space.fixed)
    space.to_tune()
    TrialConfig.from_dict(space.default_config())
    assert SearchSpace.from_json(json.loads(json.dumps(space.to_json()))) == space
    for domain in space.params.values():
        if domain.kind != "choice":
            assert domain.low <= domain.default() <= domain.high


def load_or_space_error(text: str) -> None:
    try:
        space = load_text(text)
    except SpaceError:
        return
    check_space(space)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    load_or_space_error(text)


FRAGMENTS = ["[params]\n", "[fixed]\n", "lr = ", "blocks", "{ uniform = [", "0.1", "-1", ", ", "]", " }", "\n"]
FRAGMENTS += ['"', "=", "[[x]]\n", "true", "inf", "{ choice = [", "'relu'", "{}", "#"]


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30))
def test_fuzz_toml_fragments(parts: list[str]) -> None:
    load_or_space_error("".join(parts))


@FUZZ
@given(DOCUMENTS)
def test_fuzz_structures(document: dict) -> None:
    load_or_space_error(toml_document(document))


@st.composite
def valid_documents(draw: st.DrawFn) -> dict:
    names = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=len(FIELDS), unique=True))
    searched = names[: draw(st.integers(1, len(names)))]
    params = {}
    for name in searched:
        kinds = ["choice"]
        if TRIAL_FIELD_TYPES[name] in ("int", "float"):
            kinds.append("randint" if TRIAL_FIELD_TYPES[name] == "int" else "uniform")
        if name in ("lr", "weight_decay"):
            kinds.append("loguniform")
        kind = draw(st.sampled_from(kinds))
        values = st.floats(1e-8, 0.1) if kind == "loguniform" else VALID[name]
        if kind == "choice":
            params[name] = {kind: draw(st.lists(values, min_size=1, max_size=4, unique=True))}
        else:
            params[name] = {kind: sorted(draw(st.lists(values, min_size=2, max_size=2, unique=True)))}
    fixed = {name: draw(VALID[name]) for name in names[len(searched) :]}
    return {"params": params, "fixed": fixed}


def test_valid_strategy_covers_every_field() -> None:
    assert set(VALID) == set(TRIAL_FIELD_TYPES)


@FUZZ
@given(valid_documents())
def test_fuzz_valid_spaces_load(document: dict) -> None:
    space = load_text(toml_document(document))
    check_space(space)
    assert space.to_json()["params"] == document["params"]
    assert space.fixed == document["fixed"]


def test_the_deepest_encoder_must_fit_the_image(tmp_path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("[params]\nblocks = { choice = [2, 5] }\nlatent_dim = { randint = [8, 4096] }\n")
    space = load_space(path)
    assert space.largest("blocks") == 5 and space.largest("latent_dim") == 4096 and space.largest("dropout") is None
    space.check_fits(64)
    space.check_fits(32)
    with pytest.raises(SpaceError, match="blocks = 5 pools a 28px image below 1 px; this dataset allows at most 4"):
        space.check_fits(28)
    space.check_fits(0)  # an image folder whose size is not known yet

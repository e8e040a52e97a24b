"""docs/results.md documents every column of every Parquet file: names, order and Arrow types equal
the schemas in results.py that the writers use, so a column added or retyped in one and not the
other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from regene_search.results import TABLES, TRIAL_COLUMNS, TRIAL_SCHEMA

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
HEADER = "| column | type | meaning |"
PARAMS = "param_<name>"


def arrow_name(t: pa.DataType) -> str:
    """How docs/results.md spells a type: Arrow's own name, with `list<int64>` for `list<item: int64>`."""
    return f"list<{arrow_name(t.value_type)}>" if pa.types.is_list(t) else str(t)


def documented_tables(text: str) -> dict[str, list[list[str]]]:
    """file name -> the cells of each row of its `| column | type | meaning |` table."""
    tables = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        lines = body.splitlines()
        match = re.fullmatch(r"`(\w+\.parquet)`", title.strip())
        if match is None or HEADER not in lines:
            continue
        start = lines.index(HEADER) + 2  # past the |---| line
        rows = []
        for line in lines[start:]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        tables[match.group(1)] = rows
    return tables


def documented_columns(rows: list[list[str]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """([(column, type)] in order, {param column: type} from the `param_<name>` row)."""
    columns, params = [], {}
    for names, kind, meaning in rows:
        if PARAMS in names:
            # "`param_a`, `param_b` (int64), `param_c` (string)": each group of names, then its type.
            for group, param_type in re.findall(r"((?:`param_\w+`,?\s*)+)\((\w+)\)", meaning):
                params.update({name: param_type for name in re.findall(r"`(param_\w+)`", group)})
            continue
        columns += [(name, kind.strip("`")) for name in re.findall(r"`([^`]+)`", names)]
    return columns, params


def expected(name: str) -> list[tuple[str, str]]:
    """The fixed columns of a file (trials.parquet's `param_<name>` columns are documented as a pattern)."""
    return [(f.name, arrow_name(f.type)) for f in (TRIAL_COLUMNS if name == "trials.parquet" else TABLES[name])]


def param_types() -> dict[str, str]:
    return {f.name: arrow_name(f.type) for f in TRIAL_SCHEMA if f.name not in TRIAL_COLUMNS.names}


TEXT = DOCS.read_text()
DOCUMENTED = documented_tables(TEXT)


def test_every_parquet_file_is_documented_and_every_documented_file_has_a_schema():
    assert set(DOCUMENTED) == set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_documented_columns_and_types_equal_the_schema(name):
    columns, params = documented_columns(DOCUMENTED[name])
    assert columns == expected(name)
    if name == "trials.parquet":
        assert list(params.items()) == list(param_types().items())
    else:
        assert not params


@pytest.mark.parametrize(
    "name, old, new",
    [
        ("pareto.parquet", "| `on_front` | `bool` | rank 0 |\n", ""),  # a column left undocumented
        ("pareto.parquet", "| `crowding` | `double` |", "| `crowding` | `float` |"),  # another type
        ("evaluation.parquet", "| `scope` | `string` |", "| `scopes` | `string` |"),  # another name
        ("trials.parquet", ", `param_augment` (bool)", ""),  # a hyperparameter left out
    ],
)
def test_a_doc_that_differs_from_the_schema_is_caught(name, old, new):
    assert TEXT.count(old) == 1
    columns, params = documented_columns(documented_tables(TEXT.replace(old, new))[name])
    assert columns != expected(name) or params != param_types()

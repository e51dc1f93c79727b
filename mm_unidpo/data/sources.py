"""Reading the rows of a preference data source: JSON, JSON lines, Parquet, a saved `datasets` folder, a
hub id, or in-memory rows. `open_rows(source, split)` gives (index, row) pairs, a row being a mapping or
the `BadRecordError` of a line that does not parse.

JSON and JSON lines are read with the `json` module rather than `datasets`: Arrow needs one schema for
the whole file, so a single malformed record (a number where text belongs) would fail the entire load
instead of being reported as that record. Parquet, saved datasets and hub ids go through `datasets`
(and its cache). A source that cannot be read as a whole — empty or truncated JSON, bytes that are not
UTF-8, a damaged Parquet file — is a `DataFileError` naming the file and the position.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .records import BadRecordError

Source = str | os.PathLike | Sequence[Mapping[str, Any]] | Any  # Any: a datasets (Iterable)Dataset
_JSON_SUFFIXES = {".json"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}

Row = Mapping[str, Any] | BadRecordError


class DataFileError(ValueError):
    """A data source that cannot be read as a whole (not one bad record); the message names the file and
    the position."""


_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}  # UTF-32 first: its little-endian BOM starts like UTF-16's


def _check_utf8(path: Path, data: bytes, *, line: int | None = None, offset: int = 0) -> str:
    """`data` decoded as UTF-8 (a UTF-8 byte-order mark is dropped), or a DataFileError naming the position."""
    if offset == 0:
        for bom, name in _BOMS.items():
            if data.startswith(bom):
                raise DataFileError(
                    f"{path} is {name}-encoded (it starts with a {name} byte-order mark); JSON data "
                    f"must be UTF-8: convert it, e.g. `iconv -f {name} -t UTF-8 {path.name} > out`"
                )
    skip = 3 if offset == 0 and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start + skip
        line = line if line is not None else data.count(b"\n", 0, start) + 1
        raise DataFileError(
            f"{path}: line {line}, byte {offset + start}: {data[start : start + 4]!r} is not UTF-8 ({e.reason}). "
            f"JSON data must be UTF-8; this file was written in another encoding (often Windows-1252 or Latin-1): "
            f"convert it, e.g. `iconv -f WINDOWS-1252 -t UTF-8 {path.name} > out`"
        ) from None


def _read_json(path: Path) -> Iterator[tuple[int, Row]]:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataFileError(f"{path} is empty: expected a JSON list of records")
    text = _check_utf8(path, raw)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        at_end = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")  # no closing quote to EOF
        ending = " (the file ends there: it looks truncated)" if at_end else ""
        raise DataFileError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno} (character {e.pos}): {e.msg}{ending}"
        ) from None
    except RecursionError:
        raise DataFileError(
            f"{path}: nested too deeply to parse (more than ~{sys.getrecursionlimit()} levels)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of records or an object with a list under 'data'")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            row = BadRecordError(None, "invalid_json", f"expected a JSON object, got {type(row).__name__}", index=index)
        yield index, row


def _read_jsonl(path: Path) -> Iterator[tuple[int, Row]]:
    index, offset = 0, 0
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            line = _check_utf8(path, raw, line=line_number, offset=offset)
            offset += len(raw)
            if not line.strip():
                continue  # blank lines are not records
            try:
                row: Row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                row = BadRecordError(None, "invalid_json", f"line {line_number}: {e}", index=index)
            except RecursionError:
                row = BadRecordError(
                    None,
                    "invalid_json",
                    f"line {line_number}: nested too deeply to parse (more than ~{sys.getrecursionlimit()} levels)",
                    index=index,
                )
            yield index, row
            index += 1


def _no_decode(feature: Any) -> Any:
    """A copy of a `datasets` feature tree with media (image, audio, video...) decoding turned off."""
    import copy

    import datasets

    # Only media types: Json also has a `decode` flag, and we do want JSON values decoded.
    media = tuple(
        getattr(datasets, name) for name in ("Image", "Audio", "Video", "Pdf", "Nifti") if hasattr(datasets, name)
    )
    if isinstance(feature, dict):  # Features is a dict
        return type(feature)({key: _no_decode(value) for key, value in feature.items()})
    if hasattr(feature, "feature"):  # List / LargeList / Sequence
        feature = copy.copy(feature)
        feature.feature = _no_decode(feature.feature)
        return feature
    if isinstance(feature, media):
        feature = copy.copy(feature)
        feature.decode = False
        return feature
    return feature


def _read_dataset(dataset: Any, batch_size: int = 64) -> Iterator[tuple[int, Row]]:
    """Rows of a `datasets` Dataset with images as {"bytes", "path"} dicts, never decoded.

    `datasets` decodes Image columns fully (`image.load()`) when it formats rows, which would hold every
    decoded photo of a large dataset in memory and bypass our pixel limit. So rows are read as Arrow and
    decoded with the same features, but with media decoding off: only the header is read, in check_image.
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        yield from enumerate(dataset.decode(False))
        return
    features = _no_decode(dataset.features)
    index = 0
    for batch in dataset.with_format("arrow").iter(batch_size=batch_size):
        for row in batch.to_pylist():
            yield index, features.decode_example(row)
            index += 1


def _is_saved_dataset(path: Path) -> bool:
    return (
        (path / "dataset_info.json").is_file()
        or (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
    )


def _pick_split(dataset: Any, split: str | None, where: str) -> Any:
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in dataset:
            raise ValueError(f"{where} has splits {sorted(dataset)}; split={split!r} is not one of them")
        return dataset[split]
    return dataset


def _load_parquet(path: Path) -> Any:
    """A Parquet file through `datasets`, after pyarrow has read its footer (a truncated copy has none)."""
    import datasets
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # noqa: BLE001 -- pyarrow raises ArrowInvalid / OSError on a damaged file
        raise DataFileError(
            f"{path}: not a readable Parquet file ({path.stat().st_size} bytes): {e}. A truncated "
            f"download or copy has no footer: fetch or write the file again"
        ) from None
    try:
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 -- a damaged row group surfaces here, deep inside datasets / pyarrow
        raise DataFileError(
            f"{path}: cannot read the Parquet data ({rows} rows in its footer): {type(e).__name__}: {e}"
        ) from None


def guarded(rows: Iterator[tuple[int, Row]], description: str) -> Iterator[tuple[int, Row]]:
    """`rows`, with a reader's failure mid-way (a damaged row group...) named by source and position."""
    position = 0
    while True:
        try:
            item = next(rows)
        except StopIteration:
            return
        except DataFileError:
            raise
        except Exception as e:  # noqa: BLE001 (reported with the record's position)
            raise DataFileError(
                f"{description}: reading failed after {position} records: {type(e).__name__}: {e}"
            ) from None
        position += 1
        yield item


def open_rows(source: Source, split: str | None) -> tuple[Iterator[tuple[int, Row]], Path, str]:
    """Dispatch on the source: (rows, default image root, description)."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return _read_dataset(source), Path.cwd(), "in-memory dataset"
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return ((i, dict(row)) for i, row in enumerate(source)), Path.cwd(), "in-memory records"
    path = Path(source).expanduser()  # type: ignore[arg-type]  # the other kinds are handled above
    if path.is_dir():
        if _is_saved_dataset(path):
            loaded = _pick_split(datasets.load_from_disk(str(path)), split, str(path))
        else:  # a local folder of data files, laid out like a hub repository
            loaded = _pick_split(datasets.load_dataset(str(path), split=split), split, str(path))
        return _read_dataset(loaded), path, str(path)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix in _JSON_SUFFIXES:
            return _read_json(path), path.parent, str(path)
        if suffix in _JSONL_SUFFIXES:
            return _read_jsonl(path), path.parent, str(path)
        if suffix in _PARQUET_SUFFIXES:
            return _read_dataset(_load_parquet(path)), path.parent, str(path)
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .json, .jsonl or .parquet")
    text = str(source)
    if (
        suffix in _JSON_SUFFIXES | _JSONL_SUFFIXES | _PARQUET_SUFFIXES
        or path.is_absolute()
        or text.startswith((".", "~"))
    ):
        raise FileNotFoundError(f"preference data file {text!r} does not exist")
    # Anything else is a hub dataset id ("owner/name"); datasets raises a clear error if it is not one.
    loaded = _pick_split(datasets.load_dataset(text, split=split), split, text)
    return _read_dataset(loaded), Path.cwd(), text

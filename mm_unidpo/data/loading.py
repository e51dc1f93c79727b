"""Loading preference data from files, saved datasets or the hub, and saving it in our own format.

`load_preference_data` reads rows, converts each with a format converter (`formats.py`), validates it
(`records.validate_record`) and checks every image header (`images.check_image`). Bad records either
raise (`on_bad_record="error"`, the default) or are counted by reason in `PreferenceData.skips`
(`"skip"`); nothing is dropped silently.

JSON and JSON lines are read with the `json` module rather than `datasets`: Arrow needs one schema for
the whole file, so a single malformed record (a number where text belongs) would fail the entire load
instead of being reported as that record. Parquet, saved datasets and hub ids go through `datasets`
(and its cache).
"""

from __future__ import annotations

import base64
import codecs
import collections
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from .formats import detect_format, get_converter
from .images import DEFAULT_MAX_PIXELS, check_image, resolve_image_path
from .records import BadRecordError, PreferenceRecord, SkipReport, validate_record

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, Sequence[Mapping[str, Any]], Any]  # Any: a datasets (Iterable)Dataset
_JSON_SUFFIXES = {".json"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass
class PreferenceData:
    """The records loaded from one source, what was skipped, and the format they were read as."""

    records: list[PreferenceRecord]
    skips: SkipReport = field(default_factory=SkipReport)
    format: str = ""
    source: str = ""
    # The limit the images were checked against; adapters decode with the same one.
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS
    num_rows: int = 0  # rows read from the source, good and bad

    def describe_empty(self) -> str:
        """Why there are no records, for an error message."""
        if self.num_rows == 0:
            return f"{self.source}: no preference records (the source is empty)"
        return f"{self.source}: no usable preference records: all {self.num_rows} records were bad ({self.skips.summary()})"

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PreferenceRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> PreferenceRecord:
        return self.records[i]


# --- reading rows --------------------------------------------------------------------------------

Row = Union[Mapping[str, Any], BadRecordError]


class DataFileError(ValueError):
    """A data source that cannot be read as a whole (not one bad record); the message names the file and
    the position."""


_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
         codecs.BOM_UTF16_BE: "UTF-16"}  # UTF-32 first: its little-endian BOM starts like UTF-16's


def _check_utf8(path: Path, data: bytes, *, line: int | None = None, offset: int = 0) -> str:
    """`data` decoded as UTF-8 (a UTF-8 byte-order mark is dropped), or a DataFileError naming the position."""
    if offset == 0:
        for bom, name in _BOMS.items():
            if data.startswith(bom):
                raise DataFileError(f"{path} is {name}-encoded (it starts with a {name} byte-order mark); JSON data "
                                    f"must be UTF-8: convert it, e.g. `iconv -f {name} -t UTF-8 {path.name} > out`")
    skip = 3 if offset == 0 and data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start + skip
        line = line if line is not None else data.count(b"\n", 0, start) + 1
        raise DataFileError(
            f"{path}: line {line}, byte {offset + start}: {data[start:start + 4]!r} is not UTF-8 ({e.reason}). "
            f"JSON data must be UTF-8; this file was written in another encoding (often Windows-1252 or Latin-1): "
            f"convert it, e.g. `iconv -f WINDOWS-1252 -t UTF-8 {path.name} > out`") from None


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
        raise DataFileError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} (character {e.pos}): "
                            f"{e.msg}{ending}") from None
    except RecursionError:
        raise DataFileError(f"{path}: nested too deeply to parse (more than ~{sys.getrecursionlimit()} levels)") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of records or an object with a list under 'data'")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            row = BadRecordError(None, "invalid_json", f"expected a JSON object, got {type(row).__name__}",
                                 index=index)
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
                row = BadRecordError(None, "invalid_json", f"line {line_number}: nested too deeply to parse "
                                                           f"(more than ~{sys.getrecursionlimit()} levels)", index=index)
            yield index, row
            index += 1


def _no_decode(feature: Any) -> Any:
    """A copy of a `datasets` feature tree with media (image, audio, video...) decoding turned off."""
    import copy

    import datasets

    # Only media types: Json also has a `decode` flag, and we do want JSON values decoded.
    media = tuple(getattr(datasets, name) for name in ("Image", "Audio", "Video", "Pdf", "Nifti")
                  if hasattr(datasets, name))
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
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() \
        or (path / "state.json").is_file()


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
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError on a damaged file
        raise DataFileError(f"{path}: not a readable Parquet file ({path.stat().st_size} bytes): {e}. A truncated "
                            f"download or copy has no footer: fetch or write the file again") from None
    try:
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as e:  # a damaged row group surfaces here, deep inside datasets / pyarrow
        raise DataFileError(f"{path}: cannot read the Parquet data ({rows} rows in its footer): "
                            f"{type(e).__name__}: {e}") from None


def _guarded(rows: Iterator[tuple[int, Row]], description: str) -> Iterator[tuple[int, Row]]:
    """`rows`, with a reader's failure mid-way (a damaged row group...) named by source and position."""
    position = 0
    while True:
        try:
            item = next(rows)
        except StopIteration:
            return
        except DataFileError:
            raise
        except Exception as e:
            raise DataFileError(f"{description}: reading failed after {position} records: "
                                f"{type(e).__name__}: {e}") from None
        position += 1
        yield item


def _open_rows(source: Source, split: str | None) -> tuple[Iterator[tuple[int, Row]], Path, str]:
    """Dispatch on the source: (rows, default image root, description)."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return _read_dataset(source), Path.cwd(), "in-memory dataset"
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return ((i, dict(row)) for i, row in enumerate(source)), Path.cwd(), "in-memory records"
    path = Path(source).expanduser()
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
    if suffix in _JSON_SUFFIXES | _JSONL_SUFFIXES | _PARQUET_SUFFIXES or path.is_absolute() \
            or text.startswith((".", "~")):
        raise FileNotFoundError(f"preference data file {text!r} does not exist")
    # Anything else is a hub dataset id ("owner/name"); datasets raises a clear error if it is not one.
    loaded = _pick_split(datasets.load_dataset(text, split=split), split, text)
    return _read_dataset(loaded), Path.cwd(), text


# --- the public entry points ---------------------------------------------------------------------

def load_preference_data(source: Source, *, format: str | None = None, split: str | None = "train",
                         image_root: str | os.PathLike | None = None, on_bad_record: str = "error",
                         max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
                         limit: int | None = None, unique_ids: bool = False) -> PreferenceData:
    """Load preference records from a file, a saved dataset, a hub id or in-memory rows.

    Args:
        source: a .json file (a list of objects, or an object with the list under "data"), a .jsonl
            file, a .parquet file, a folder saved with `Dataset.save_to_disk` (or a local folder of
            data files), a hub dataset id, a `datasets.Dataset`, or a list of dicts.
        format: a converter name (see `formats.FORMATS`), or None / "auto" to detect it from the first
            record's keys.
        split: the split of a hub id or saved DatasetDict (ignored for single files).
        image_root: where relative image paths are resolved, and the folder no image path may leave.
            Default: the data file's folder (the dataset folder for saved datasets; the current
            directory for hub ids and in-memory sources).
        on_bad_record: "error" raises the first `BadRecordError`; "skip" counts it in `.skips`.
        max_image_pixels: refuse images with more pixels (checked from the header); None: no limit.
        limit: stop after this many good records (None: all).
        unique_ids: make records that share an id an error (`DuplicateIdError`); by default they are a
            warning with the count and the first few.

    A file that cannot be read as a whole (empty or truncated JSON, bytes that are not UTF-8, a damaged
    Parquet file) is a `DataFileError` naming the file and the position.
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    convert = None if format in (None, "auto") else get_converter(format)
    if image_root is not None and not Path(image_root).is_dir():
        raise FileNotFoundError(f"image_root {str(image_root)!r} is not a directory")
    rows, default_root, description = _open_rows(source, split)
    root = str(Path(image_root if image_root is not None else default_root).resolve())

    records: list[PreferenceRecord] = []
    skips = SkipReport()
    if limit == 0:
        rows = iter(())
    detected_from = None
    num_rows = 0
    for index, row in _guarded(rows, description):
        num_rows += 1
        try:
            if isinstance(row, BadRecordError):
                raise row
            if convert is None:
                format, detected_from = detect_format(row), index
                convert = get_converter(format)
            record = _convert(convert, row, index, format, detected_from)
            record.index, record.image_root = index, root
            validate_record(record)
            for ref in record.images:
                check_image(ref, root, max_image_pixels, record=record)
        except BadRecordError as e:
            if on_bad_record == "error":
                raise
            skips.add(e)
            continue
        records.append(record)
        if limit is not None and len(records) >= limit:
            break

    skips.log(description)
    if not records:
        what = "the source has no records" if num_rows == 0 else f"all {num_rows} records were bad ({skips.summary()})"
        logger.warning("%s: no usable preference records: %s", description, what)
    else:
        logger.info("%s: loaded %d records as format %r", description, len(records), format)
    _check_ids(records, description, unique_ids)
    return PreferenceData(records=records, skips=skips, format=format or "", source=description,
                          max_image_pixels=max_image_pixels, num_rows=num_rows)


def _convert(convert: Any, row: Mapping[str, Any], index: int, format: str | None,
             detected_from: int | None) -> PreferenceRecord:
    """`convert(row, index)`, with anything but a BadRecordError (a field of the wrong type deep in a
    converter) turned into one naming the record, and a hint when the format was detected from another row."""
    try:
        return convert(row, index)
    except BadRecordError as e:
        if e.reason == "missing_field" and detected_from is not None and detected_from != index:
            e.args = (f"{e.args[0]} (the format {format!r} was detected from record {detected_from}; a file that "
                      f"mixes formats needs one format per file)",)
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as e:
        record_id = row.get("id", row.get("idx")) if isinstance(row, Mapping) else None
        raise BadRecordError(None, "malformed_record", f"the {format} converter cannot read this row: "
                                                       f"{type(e).__name__}: {e}", index=index,
                             record_id=None if record_id is None else str(record_id)) from None


def duplicate_ids(records: Iterable[PreferenceRecord]) -> dict[str, list[int | None]]:
    """Each id held by more than one record, with those records' indices."""
    where: dict[str, list[int | None]] = collections.defaultdict(list)
    for record in records:
        if record.id is not None:
            where[record.id].append(record.index)
    return {rid: indices for rid, indices in where.items() if len(indices) > 1}


def _check_ids(records: list[PreferenceRecord], description: str, unique: bool) -> None:
    duplicates = duplicate_ids(records)
    if not duplicates:
        return
    shown = "; ".join(f"{rid!r} at records {', '.join(map(str, indices[:4]))}{', ...' if len(indices) > 4 else ''}"
                      for rid, indices in list(duplicates.items())[:5])
    message = (f"{description}: {len(duplicates)} id(s) are held by more than one record "
               f"({sum(map(len, duplicates.values()))} records): {shown}{'; ...' if len(duplicates) > 5 else ''}")
    if unique:
        raise DuplicateIdError(message + " (ids must be unique: data.unique_ids is set)")
    logger.warning("%s", message)


class DuplicateIdError(ValueError):
    """Two records share an id where ids must be unique (`unique_ids=True`)."""


def _saved_image(ref: Any, record: PreferenceRecord, root: Path) -> Any:
    if isinstance(ref, Image.Image):
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")  # lossless for every mode PNG supports; others are converted
        ref = buffer.getvalue()
    if isinstance(ref, (bytes, bytearray)):
        # Embedded images keep their original encoding (a JPEG stays the same JPEG bytes).
        return {"bytes_b64": base64.b64encode(ref).decode("ascii")}
    absolute = resolve_image_path(ref, record.image_root, record)
    if not absolute.is_relative_to(root):
        raise ValueError(f"{record.where()}: image {str(ref)!r} ({absolute}) is outside the image root "
                         f"{str(root)!r} of the saved file; pass image_root= a folder that contains it "
                         f"(and load the file with the same image_root)")
    return absolute.relative_to(root).as_posix()


def save_preference_data(records: Iterable[PreferenceRecord], path: str | os.PathLike, *,
                         image_root: str | os.PathLike | None = None) -> Path:
    """Write records as JSON lines in the `unidpo` format, readable back with `load_preference_data`.

    One object per line: id, prompt (text or chat messages), chosen, rejected, score_chosen,
    score_rejected and images. Image paths are written relative to `image_root` (default: the output
    file's folder, which is also where `load_preference_data` resolves them by default); embedded bytes
    and PIL images are written inline as {"bytes_b64": <base64>} (PIL images encoded as PNG), so the
    file is self-contained. An image path outside `image_root` is an error rather than an absolute path
    that loading would refuse. The file is written to a temporary name and renamed when complete.
    """
    path = Path(path)
    root = Path(image_root if image_root is not None else path.parent).resolve()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                row: dict[str, Any] = {"id": record.id, "prompt": record.prompt, "chosen": record.chosen,
                                       "rejected": record.rejected}
                if record.score_chosen is not None or record.score_rejected is not None:
                    row["score_chosen"], row["score_rejected"] = record.score_chosen, record.score_rejected
                row["images"] = [_saved_image(ref, record, root) for ref in record.images]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

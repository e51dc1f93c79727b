"""Loading preference data from files, saved datasets or the hub, and saving it in our own format.

`load_preference_data` reads rows, converts each with a format converter (`formats.py`), validates it
(`records.validate_record`) and checks every image header (`images.check_image`). Bad records either
raise (`on_bad_record="error"`, the default) or are counted by reason in `PreferenceData.skips`
(`"skip"`); nothing is dropped silently.

Rows come from `sources.py` (files, saved datasets, the hub); a source that cannot be read as a whole
is a `DataFileError` naming the file and the position.
"""

from __future__ import annotations

import base64
import collections
import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mm_unidpo.io import write_jsonl

from .formats import detect_format, get_converter
from .images import DEFAULT_MAX_PIXELS, check_image, resolve_image_path
from .records import BadRecordError, PreferenceRecord, SkipReport, validate_record
from .sources import DataFileError, Source, guarded, open_rows

__all__ = [
    "DataFileError",
    "DuplicateIdError",
    "PreferenceData",
    "duplicate_ids",
    "load_preference_data",
    "save_preference_data",
]

logger = logging.getLogger(__name__)


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
        return (
            f"{self.source}: no usable preference records: all {self.num_rows} records were bad "
            f"({self.skips.summary()})"
        )

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PreferenceRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> PreferenceRecord:
        return self.records[i]


# --- the public entry points ---------------------------------------------------------------------


def load_preference_data(
    source: Source,
    *,
    format: str | None = None,
    split: str | None = "train",
    image_root: str | os.PathLike | None = None,
    on_bad_record: str = "error",
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
    unique_ids: bool = False,
) -> PreferenceData:
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
    rows, default_root, description = open_rows(source, split)
    root = str(Path(image_root if image_root is not None else default_root).resolve())

    records: list[PreferenceRecord] = []
    skips = SkipReport()
    if limit == 0:
        rows = iter(())
    detected_from = None
    num_rows = 0
    for index, row in guarded(rows, description):
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
            for ref in [*record.images, *(record.rejected_images or [])]:
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
    return PreferenceData(
        records=records,
        skips=skips,
        format=format or "",
        source=description,
        max_image_pixels=max_image_pixels,
        num_rows=num_rows,
    )


def _convert(
    convert: Any, row: Mapping[str, Any], index: int, format: str | None, detected_from: int | None
) -> PreferenceRecord:
    """`convert(row, index)`, with anything but a BadRecordError (a field of the wrong type deep in a
    converter) turned into one naming the record, and a hint when the format was detected from another row."""
    try:
        return convert(row, index)
    except BadRecordError as e:
        if e.reason == "missing_field" and detected_from is not None and detected_from != index:
            e.args = (
                f"{e.args[0]} (the format {format!r} was detected from record {detected_from}; a file that "
                f"mixes formats needs one format per file)",
            )
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as e:
        record_id = row.get("id", row.get("idx")) if isinstance(row, Mapping) else None
        raise BadRecordError(
            None,
            "malformed_record",
            f"the {format} converter cannot read this row: {type(e).__name__}: {e}",
            index=index,
            record_id=None if record_id is None else str(record_id),
        ) from None


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
    shown = "; ".join(
        f"{rid!r} at records {', '.join(map(str, indices[:4]))}{', ...' if len(indices) > 4 else ''}"
        for rid, indices in list(duplicates.items())[:5]
    )
    message = (
        f"{description}: {len(duplicates)} id(s) are held by more than one record "
        f"({sum(map(len, duplicates.values()))} records): {shown}{'; ...' if len(duplicates) > 5 else ''}"
    )
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
        raise ValueError(
            f"{record.where()}: image {str(ref)!r} ({absolute}) is outside the image root "
            f"{str(root)!r} of the saved file; pass image_root= a folder that contains it "
            f"(and load the file with the same image_root)"
        )
    return absolute.relative_to(root).as_posix()


def save_preference_data(
    records: Iterable[PreferenceRecord], path: str | os.PathLike, *, image_root: str | os.PathLike | None = None
) -> Path:
    """Write records as JSON lines in the `unidpo` format, readable back with `load_preference_data`.

    One object per line: id, prompt (text or chat messages), chosen, rejected, score_chosen,
    score_rejected, images (and rejected_images where a record has them). Image paths are written
    relative to `image_root` (default: the output file's folder, which is also where
    `load_preference_data` resolves them by default); embedded bytes and PIL images are written inline
    as {"bytes_b64": <base64>} (PIL images encoded as PNG), so the file is self-contained. An image path
    outside `image_root` is an error rather than an absolute path that loading would refuse. The file is
    written to a temporary name and renamed when complete.
    """
    path = Path(path)
    root = Path(image_root if image_root is not None else path.parent).resolve()

    def rows() -> Iterator[dict[str, Any]]:
        for record in records:
            row: dict[str, Any] = {
                "id": record.id,
                "prompt": record.prompt,
                "chosen": record.chosen,
                "rejected": record.rejected,
            }
            if record.score_chosen is not None or record.score_rejected is not None:
                row["score_chosen"], row["score_rejected"] = record.score_chosen, record.score_rejected
            row["images"] = [_saved_image(ref, record, root) for ref in record.images]
            if record.rejected_images is not None:
                row["rejected_images"] = [_saved_image(ref, record, root) for ref in record.rejected_images]
            yield row

    return write_jsonl(path, rows())

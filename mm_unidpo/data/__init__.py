"""The preference data layer: one record type, format converters, loaders and safe image loading.

data = load_preference_data("train.jsonl", image_root="images/", on_bad_record="skip")
for record in data: ...           # PreferenceRecord
print(data.skips.summary())       # what was skipped, by reason
images = load_record_images(data[0])
"""

from __future__ import annotations

from .fingerprint import record_digest, record_digests
from .formats import FORMATS, UnknownFormatError, detect_format, known_formats, register_format
from .images import DEFAULT_MAX_PIXELS, check_image, load_image, load_record_images, resolve_image_path, to_rgb
from .loading import (
    DataFileError,
    DuplicateIdError,
    PreferenceData,
    duplicate_ids,
    load_preference_data,
    save_preference_data,
)
from .records import (
    BAD_RECORD_REASONS,
    IMAGE_PLACEHOLDER,
    BadRecordError,
    ImageRef,
    Message,
    PreferenceRecord,
    Prompt,
    PromptFields,
    SkipReport,
    add_image_placeholders,
    as_image_ref,
    count_placeholders,
    message_text,
    validate_prompt,
    validate_record,
)

__all__ = [
    "BAD_RECORD_REASONS",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "IMAGE_PLACEHOLDER",
    "BadRecordError",
    "DataFileError",
    "DuplicateIdError",
    "ImageRef",
    "Message",
    "PreferenceData",
    "PreferenceRecord",
    "Prompt",
    "PromptFields",
    "SkipReport",
    "UnknownFormatError",
    "add_image_placeholders",
    "as_image_ref",
    "check_image",
    "count_placeholders",
    "detect_format",
    "duplicate_ids",
    "known_formats",
    "load_image",
    "load_preference_data",
    "load_record_images",
    "message_text",
    "record_digest",
    "record_digests",
    "register_format",
    "resolve_image_path",
    "save_preference_data",
    "to_rgb",
    "validate_prompt",
    "validate_record",
]

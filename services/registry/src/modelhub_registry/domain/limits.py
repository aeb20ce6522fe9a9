"""Size and count limits of model files, set from the registry's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_id_length: int = 256
    max_name_length: int = 256
    max_description_length: int = 4_000
    max_system_prompt_length: int = 100_000
    max_tags: int = 32
    max_tag_length: int = 64
    max_suggestions: int = 32
    max_suggestion_length: int = 4_000
    max_stop_sequences: int = 16
    max_refs: int = 256
    max_params_bytes: int = 256_000
    max_meta_bytes: int = 256_000
    max_avatar_bytes: int = 5_000_000
    max_avatar_pixels: int = 40_000_000
    max_import_bytes: int = 50_000_000
    max_import_items: int = 5_000

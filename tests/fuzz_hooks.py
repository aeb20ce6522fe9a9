"""Schemathesis hooks for the stateful phase of tests/test_fuzz_phases.py, loaded by ``st run`` through
``SCHEMATHESIS_HOOKS``.

A model file can only be built on a base that exists, and deterministic generation draws the same id in every
scenario: left alone, every create of a model file answers 422 (no such base) or 409 (that id is taken), and no
scenario gets past its first step to the calls linked to it (read, change, hide, share, export, delete it). So
in the stateful phase only, a model file's create gets an id of its own and the base model the test seeded
(``MODELHUB_FUZZ_BASE_MODEL``). Every other field stays as generated, and schemathesis revalidates the case
after the hook, so a case that was negative for another reason is still checked as negative.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import schemathesis
from schemathesis.generation.meta import TestPhase

_numbers = itertools.count()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    del context, kwargs  # the case is changed in place
    meta = case.meta
    if meta is None or meta.phase.name != TestPhase.STATEFUL or not isinstance(case.body, dict):
        return
    if (case.method.upper(), case.path) != ("POST", "/api/v1/models"):
        return
    case.body["id"] = f"fuzz-{next(_numbers)}"
    if base := os.environ.get("MODELHUB_FUZZ_BASE_MODEL"):
        case.body["base_model_id"] = base

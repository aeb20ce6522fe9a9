"""The puller's events (``modelhub.pulls.v1.*``) built from its domain objects."""

from __future__ import annotations

from google.protobuf.struct_pb2 import Struct

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.events import PULLS, EventEnvelope, SubjectIds, new_envelope
from modelhub_puller.domain.details import ModelDetails
from modelhub_puller.domain.pull import LayerProgress, PullJob, Target

SOURCE = "puller"
REQUESTED = PULLS.subject("requested")
PROGRESS = PULLS.subject("progress")
COMPLETED = PULLS.subject("completed")
FAILED = PULLS.subject("failed")
CANCELLED = PULLS.subject("cancelled")
CANCEL_REQUESTED = PULLS.subject("cancel_requested")
MODEL_DELETED = PULLS.subject("model_deleted")
#: Everything the API relays to ``GET /pulls/{id}/events`` and workers listen to for cancels.
ALL = "modelhub.pulls.v1.>"
FINAL_TYPES = frozenset(s.removeprefix("modelhub.") for s in (COMPLETED, FAILED, CANCELLED))

_TARGETS = {Target.STORE: events_pb2.PULL_TARGET_STORE, Target.OLLAMA: events_pb2.PULL_TARGET_OLLAMA}


def _ids(job: PullJob) -> SubjectIds:
    return SubjectIds(pull_id=job.id, model_id=job.base_model_id)


def _service(subject: str, job: PullJob, payload: object) -> EventEnvelope:
    return new_envelope(subject, actor=SOURCE, role="service", source=SOURCE, payload=payload, subject_ids=_ids(job))  # type: ignore[arg-type]


def requested(job: PullJob, principal: Principal) -> EventEnvelope:
    payload = events_pb2.PullRequested(pull_id=job.id, model=job.model, target=_TARGETS[job.target])
    return new_envelope(
        REQUESTED, actor=principal.subject, role=principal.role, source=SOURCE, payload=payload, subject_ids=_ids(job)
    )


def cancel_requested(job: PullJob, principal: Principal) -> EventEnvelope:
    payload = events_pb2.PullCancelRequested(pull_id=job.id, model=job.model)
    return new_envelope(
        CANCEL_REQUESTED,
        actor=principal.subject,
        role=principal.role,
        source=SOURCE,
        payload=payload,
        subject_ids=_ids(job),
    )


def progress(job: PullJob, layers: list[LayerProgress]) -> EventEnvelope:
    payload = events_pb2.PullProgress(
        pull_id=job.id,
        model=job.model,
        status=job.status,
        total_bytes=job.total_bytes,
        completed_bytes=job.completed_bytes,
        bytes_per_second=job.bytes_per_second,
        layers=[
            events_pb2.LayerProgress(
                digest=layer.digest,
                media_type=layer.media_type,
                total_bytes=layer.total_bytes,
                completed_bytes=layer.completed_bytes,
            )
            for layer in layers
        ],
    )
    return _service(PROGRESS, job, payload)


def completed(job: PullJob, details: ModelDetails) -> EventEnvelope:
    params = Struct()
    params.update(details.params)
    payload = events_pb2.PullCompleted(
        pull_id=job.id,
        model=job.base_model_id,
        target=_TARGETS[job.target],
        details=events_pb2.BaseModelDetails(
            format=details.format,
            family=details.family,
            families=details.families,
            parameter_size=details.parameter_size,
            quantization_level=details.quantization_level,
            architecture=details.architecture,
            template=details.template,
            system=details.system,
            params=params,
            licenses=details.licenses,
            vision=details.vision,
            size_bytes=details.size_bytes,
            manifest_digest=details.manifest_digest,
            model_digest=details.model_digest,
            projector_digests=details.projector_digests,
            store_bucket=details.store_bucket,
            context_length=details.context_length,
        ),
    )
    return _service(COMPLETED, job, payload)


def failed(job: PullJob, code: str, message: str) -> EventEnvelope:
    return _service(FAILED, job, events_pb2.PullFailed(pull_id=job.id, model=job.model, code=code, message=message))


def cancelled(job: PullJob) -> EventEnvelope:
    return _service(CANCELLED, job, events_pb2.PullCancelled(pull_id=job.id, model=job.model))


def model_deleted(
    *, model: str, base_model_id: str, manifest_digest: str, removed: list[str], principal: Principal
) -> EventEnvelope:
    payload = events_pb2.StoredModelDeleted(
        model=model, base_model_id=base_model_id, manifest_digest=manifest_digest, removed_digests=removed
    )
    return new_envelope(
        MODEL_DELETED,
        actor=principal.subject,
        role=principal.role,
        source=SOURCE,
        payload=payload,
        subject_ids=SubjectIds(model_id=base_model_id),
    )

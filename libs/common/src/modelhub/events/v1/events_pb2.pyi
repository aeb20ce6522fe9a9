import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_TARGET_UNSPECIFIED: _ClassVar[PullTarget]
    PULL_TARGET_STORE: _ClassVar[PullTarget]
    PULL_TARGET_OLLAMA: _ClassVar[PullTarget]
PULL_TARGET_UNSPECIFIED: PullTarget
PULL_TARGET_STORE: PullTarget
PULL_TARGET_OLLAMA: PullTarget

class Actor(_message.Message):
    __slots__ = ("subject", "role")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class SubjectIds(_message.Message):
    __slots__ = ("model_id", "pull_id", "knowledge_id", "file_id", "conversation_id", "tool_server_id", "filter_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    pull_id: str
    knowledge_id: str
    file_id: str
    conversation_id: str
    tool_server_id: str
    filter_id: str
    def __init__(self, model_id: _Optional[str] = ..., pull_id: _Optional[str] = ..., knowledge_id: _Optional[str] = ..., file_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., tool_server_id: _Optional[str] = ..., filter_id: _Optional[str] = ...) -> None: ...

class EventEnvelope(_message.Message):
    __slots__ = ("id", "type", "occurred_at", "actor", "subject_ids", "trace_id", "source", "model_changed", "model_deleted", "tool_server_changed", "filter_changed", "audit_recorded", "pull_requested", "pull_progress", "pull_completed", "pull_failed", "pull_cancelled", "pull_cancel_requested", "stored_model_deleted", "knowledge_file_added", "knowledge_file_indexed", "knowledge_file_failed", "knowledge_collection_deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MODEL_DELETED_FIELD_NUMBER: _ClassVar[int]
    TOOL_SERVER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    FILTER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    PULL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PULL_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PULL_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PULL_FAILED_FIELD_NUMBER: _ClassVar[int]
    PULL_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PULL_CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    STORED_MODEL_DELETED_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FILE_ADDED_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FILE_INDEXED_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FILE_FAILED_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_COLLECTION_DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    occurred_at: _timestamp_pb2.Timestamp
    actor: Actor
    subject_ids: SubjectIds
    trace_id: str
    source: str
    model_changed: ModelChanged
    model_deleted: ModelDeleted
    tool_server_changed: ToolServerChanged
    filter_changed: FilterChanged
    audit_recorded: AuditRecorded
    pull_requested: PullRequested
    pull_progress: PullProgress
    pull_completed: PullCompleted
    pull_failed: PullFailed
    pull_cancelled: PullCancelled
    pull_cancel_requested: PullCancelRequested
    stored_model_deleted: StoredModelDeleted
    knowledge_file_added: KnowledgeFileAdded
    knowledge_file_indexed: KnowledgeFileIndexed
    knowledge_file_failed: KnowledgeFileFailed
    knowledge_collection_deleted: KnowledgeCollectionDeleted
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ..., subject_ids: _Optional[_Union[SubjectIds, _Mapping]] = ..., trace_id: _Optional[str] = ..., source: _Optional[str] = ..., model_changed: _Optional[_Union[ModelChanged, _Mapping]] = ..., model_deleted: _Optional[_Union[ModelDeleted, _Mapping]] = ..., tool_server_changed: _Optional[_Union[ToolServerChanged, _Mapping]] = ..., filter_changed: _Optional[_Union[FilterChanged, _Mapping]] = ..., audit_recorded: _Optional[_Union[AuditRecorded, _Mapping]] = ..., pull_requested: _Optional[_Union[PullRequested, _Mapping]] = ..., pull_progress: _Optional[_Union[PullProgress, _Mapping]] = ..., pull_completed: _Optional[_Union[PullCompleted, _Mapping]] = ..., pull_failed: _Optional[_Union[PullFailed, _Mapping]] = ..., pull_cancelled: _Optional[_Union[PullCancelled, _Mapping]] = ..., pull_cancel_requested: _Optional[_Union[PullCancelRequested, _Mapping]] = ..., stored_model_deleted: _Optional[_Union[StoredModelDeleted, _Mapping]] = ..., knowledge_file_added: _Optional[_Union[KnowledgeFileAdded, _Mapping]] = ..., knowledge_file_indexed: _Optional[_Union[KnowledgeFileIndexed, _Mapping]] = ..., knowledge_file_failed: _Optional[_Union[KnowledgeFileFailed, _Mapping]] = ..., knowledge_collection_deleted: _Optional[_Union[KnowledgeCollectionDeleted, _Mapping]] = ...) -> None: ...

class ModelChanged(_message.Message):
    __slots__ = ("model_id", "base_model_id", "version", "changed_fields", "hidden", "enabled", "is_base", "knowledge_ids")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    IS_BASE_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_IDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    base_model_id: str
    version: int
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    hidden: bool
    enabled: bool
    is_base: bool
    knowledge_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., base_model_id: _Optional[str] = ..., version: _Optional[int] = ..., changed_fields: _Optional[_Iterable[str]] = ..., hidden: _Optional[bool] = ..., enabled: _Optional[bool] = ..., is_base: _Optional[bool] = ..., knowledge_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelDeleted(_message.Message):
    __slots__ = ("model_id", "last_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    last_version: int
    def __init__(self, model_id: _Optional[str] = ..., last_version: _Optional[int] = ...) -> None: ...

class ToolServerChanged(_message.Message):
    __slots__ = ("id", "version", "kind", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    kind: str
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class AuditRecorded(_message.Message):
    __slots__ = ("actor", "actor_role", "action", "target", "outcome", "status", "source_address", "request_id")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    actor: str
    actor_role: str
    action: str
    target: str
    outcome: str
    status: int
    source_address: str
    request_id: str
    def __init__(self, actor: _Optional[str] = ..., actor_role: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., status: _Optional[int] = ..., source_address: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class FilterChanged(_message.Message):
    __slots__ = ("id", "version", "deleted")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    deleted: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., deleted: _Optional[bool] = ...) -> None: ...

class PullRequested(_message.Message):
    __slots__ = ("pull_id", "model", "target")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    target: PullTarget
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ..., target: _Optional[_Union[PullTarget, str]] = ...) -> None: ...

class LayerProgress(_message.Message):
    __slots__ = ("digest", "media_type", "total_bytes", "completed_bytes")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    total_bytes: int
    completed_bytes: int
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., total_bytes: _Optional[int] = ..., completed_bytes: _Optional[int] = ...) -> None: ...

class PullProgress(_message.Message):
    __slots__ = ("pull_id", "model", "status", "total_bytes", "completed_bytes", "bytes_per_second", "layers")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    status: str
    total_bytes: int
    completed_bytes: int
    bytes_per_second: float
    layers: _containers.RepeatedCompositeFieldContainer[LayerProgress]
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[str] = ..., total_bytes: _Optional[int] = ..., completed_bytes: _Optional[int] = ..., bytes_per_second: _Optional[float] = ..., layers: _Optional[_Iterable[_Union[LayerProgress, _Mapping]]] = ...) -> None: ...

class BaseModelDetails(_message.Message):
    __slots__ = ("format", "family", "families", "parameter_size", "quantization_level", "architecture", "template", "system", "params", "licenses", "vision", "size_bytes", "manifest_digest", "model_digest", "projector_digests", "store_bucket", "context_length")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    LICENSES_FIELD_NUMBER: _ClassVar[int]
    VISION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROJECTOR_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    STORE_BUCKET_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    format: str
    family: str
    families: _containers.RepeatedScalarFieldContainer[str]
    parameter_size: str
    quantization_level: str
    architecture: str
    template: str
    system: str
    params: _struct_pb2.Struct
    licenses: _containers.RepeatedScalarFieldContainer[str]
    vision: bool
    size_bytes: int
    manifest_digest: str
    model_digest: str
    projector_digests: _containers.RepeatedScalarFieldContainer[str]
    store_bucket: str
    context_length: int
    def __init__(self, format: _Optional[str] = ..., family: _Optional[str] = ..., families: _Optional[_Iterable[str]] = ..., parameter_size: _Optional[str] = ..., quantization_level: _Optional[str] = ..., architecture: _Optional[str] = ..., template: _Optional[str] = ..., system: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., licenses: _Optional[_Iterable[str]] = ..., vision: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., manifest_digest: _Optional[str] = ..., model_digest: _Optional[str] = ..., projector_digests: _Optional[_Iterable[str]] = ..., store_bucket: _Optional[str] = ..., context_length: _Optional[int] = ...) -> None: ...

class PullCompleted(_message.Message):
    __slots__ = ("pull_id", "model", "target", "details")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    target: PullTarget
    details: BaseModelDetails
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ..., target: _Optional[_Union[PullTarget, str]] = ..., details: _Optional[_Union[BaseModelDetails, _Mapping]] = ...) -> None: ...

class PullFailed(_message.Message):
    __slots__ = ("pull_id", "model", "code", "message")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    code: str
    message: str
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PullCancelled(_message.Message):
    __slots__ = ("pull_id", "model")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class PullCancelRequested(_message.Message):
    __slots__ = ("pull_id", "model")
    PULL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pull_id: str
    model: str
    def __init__(self, pull_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class StoredModelDeleted(_message.Message):
    __slots__ = ("model", "base_model_id", "manifest_digest", "removed_digests")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    base_model_id: str
    manifest_digest: str
    removed_digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., base_model_id: _Optional[str] = ..., manifest_digest: _Optional[str] = ..., removed_digests: _Optional[_Iterable[str]] = ...) -> None: ...

class KnowledgeFileAdded(_message.Message):
    __slots__ = ("knowledge_id", "file_id", "filename", "content_type", "object_key", "sha256", "size_bytes")
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    knowledge_id: str
    file_id: str
    filename: str
    content_type: str
    object_key: str
    sha256: str
    size_bytes: int
    def __init__(self, knowledge_id: _Optional[str] = ..., file_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., object_key: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class KnowledgeFileIndexed(_message.Message):
    __slots__ = ("knowledge_id", "file_id", "chunks", "embedder")
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    knowledge_id: str
    file_id: str
    chunks: int
    embedder: str
    def __init__(self, knowledge_id: _Optional[str] = ..., file_id: _Optional[str] = ..., chunks: _Optional[int] = ..., embedder: _Optional[str] = ...) -> None: ...

class KnowledgeFileFailed(_message.Message):
    __slots__ = ("knowledge_id", "file_id", "code", "message")
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    knowledge_id: str
    file_id: str
    code: str
    message: str
    def __init__(self, knowledge_id: _Optional[str] = ..., file_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class KnowledgeCollectionDeleted(_message.Message):
    __slots__ = ("knowledge_id",)
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    knowledge_id: str
    def __init__(self, knowledge_id: _Optional[str] = ...) -> None: ...

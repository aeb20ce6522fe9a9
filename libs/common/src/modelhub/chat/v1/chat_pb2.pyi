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

class ContextMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_MODE_UNSPECIFIED: _ClassVar[ContextMode]
    CONTEXT_MODE_SHARED: _ClassVar[ContextMode]
    CONTEXT_MODE_PER_MODEL: _ClassVar[ContextMode]
CONTEXT_MODE_UNSPECIFIED: ContextMode
CONTEXT_MODE_SHARED: ContextMode
CONTEXT_MODE_PER_MODEL: ContextMode

class Image(_message.Message):
    __slots__ = ("data", "url", "mime_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    url: str
    mime_type: str
    def __init__(self, data: _Optional[bytes] = ..., url: _Optional[str] = ..., mime_type: _Optional[str] = ...) -> None: ...

class UserMessage(_message.Message):
    __slots__ = ("text", "images")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    text: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, text: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("conversation_id", "models", "message", "parent_message_id", "context_mode", "params")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARENT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_MODE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    models: _containers.RepeatedScalarFieldContainer[str]
    message: UserMessage
    parent_message_id: str
    context_mode: ContextMode
    params: _struct_pb2.Struct
    def __init__(self, conversation_id: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., message: _Optional[_Union[UserMessage, _Mapping]] = ..., parent_message_id: _Optional[str] = ..., context_mode: _Optional[_Union[ContextMode, str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("knowledge_id", "file_id", "file_name", "text", "score", "page", "start_offset", "end_offset")
    KNOWLEDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    knowledge_id: str
    file_id: str
    file_name: str
    text: str
    score: float
    page: int
    start_offset: int
    end_offset: int
    def __init__(self, knowledge_id: _Optional[str] = ..., file_id: _Optional[str] = ..., file_name: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., page: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "tool", "arguments", "server_id", "step")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    id: str
    tool: str
    arguments: str
    server_id: str
    step: int
    def __init__(self, id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ..., server_id: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("id", "ok", "content", "error_code", "duration_seconds", "truncated")
    ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    ok: bool
    content: str
    error_code: str
    duration_seconds: float
    truncated: bool
    def __init__(self, id: _Optional[str] = ..., ok: _Optional[bool] = ..., content: _Optional[str] = ..., error_code: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ToolStep(_message.Message):
    __slots__ = ("call", "result")
    CALL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    call: ToolCall
    result: ToolResult
    def __init__(self, call: _Optional[_Union[ToolCall, _Mapping]] = ..., result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("model_id", "turn_started", "answer_started", "delta", "citations", "warning", "answer_done", "answer_error", "turn_done", "tool_call", "tool_result")
    class TurnStarted(_message.Message):
        __slots__ = ("conversation_id", "user_message_id")
        CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
        USER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
        conversation_id: str
        user_message_id: str
        def __init__(self, conversation_id: _Optional[str] = ..., user_message_id: _Optional[str] = ...) -> None: ...
    class AnswerStarted(_message.Message):
        __slots__ = ("message_id", "parent_id")
        MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
        PARENT_ID_FIELD_NUMBER: _ClassVar[int]
        message_id: str
        parent_id: str
        def __init__(self, message_id: _Optional[str] = ..., parent_id: _Optional[str] = ...) -> None: ...
    class Delta(_message.Message):
        __slots__ = ("text",)
        TEXT_FIELD_NUMBER: _ClassVar[int]
        text: str
        def __init__(self, text: _Optional[str] = ...) -> None: ...
    class Citations(_message.Message):
        __slots__ = ("citations",)
        CITATIONS_FIELD_NUMBER: _ClassVar[int]
        citations: _containers.RepeatedCompositeFieldContainer[Citation]
        def __init__(self, citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ...) -> None: ...
    class Warning(_message.Message):
        __slots__ = ("code", "message")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        code: str
        message: str
        def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
    class AnswerDone(_message.Message):
        __slots__ = ("finish_reason", "usage", "time_to_first_token_seconds", "total_seconds")
        FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
        USAGE_FIELD_NUMBER: _ClassVar[int]
        TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
        TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
        finish_reason: str
        usage: Usage
        time_to_first_token_seconds: float
        total_seconds: float
        def __init__(self, finish_reason: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., time_to_first_token_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...
    class AnswerError(_message.Message):
        __slots__ = ("code", "message", "message_id")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
        code: str
        message: str
        message_id: str
        def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...
    class TurnDone(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_STARTED_FIELD_NUMBER: _ClassVar[int]
    ANSWER_STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ANSWER_DONE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_ERROR_FIELD_NUMBER: _ClassVar[int]
    TURN_DONE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    turn_started: ChatEvent.TurnStarted
    answer_started: ChatEvent.AnswerStarted
    delta: ChatEvent.Delta
    citations: ChatEvent.Citations
    warning: ChatEvent.Warning
    answer_done: ChatEvent.AnswerDone
    answer_error: ChatEvent.AnswerError
    turn_done: ChatEvent.TurnDone
    tool_call: ToolCall
    tool_result: ToolResult
    def __init__(self, model_id: _Optional[str] = ..., turn_started: _Optional[_Union[ChatEvent.TurnStarted, _Mapping]] = ..., answer_started: _Optional[_Union[ChatEvent.AnswerStarted, _Mapping]] = ..., delta: _Optional[_Union[ChatEvent.Delta, _Mapping]] = ..., citations: _Optional[_Union[ChatEvent.Citations, _Mapping]] = ..., warning: _Optional[_Union[ChatEvent.Warning, _Mapping]] = ..., answer_done: _Optional[_Union[ChatEvent.AnswerDone, _Mapping]] = ..., answer_error: _Optional[_Union[ChatEvent.AnswerError, _Mapping]] = ..., turn_done: _Optional[_Union[ChatEvent.TurnDone, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

class ModelCapabilities(_message.Message):
    __slots__ = ("vision", "citations", "file_upload")
    VISION_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    FILE_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    vision: bool
    citations: bool
    file_upload: bool
    def __init__(self, vision: _Optional[bool] = ..., citations: _Optional[bool] = ..., file_upload: _Optional[bool] = ...) -> None: ...

class SuggestionPrompt(_message.Message):
    __slots__ = ("title", "subtitle", "content")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUBTITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    title: str
    subtitle: str
    content: str
    def __init__(self, title: _Optional[str] = ..., subtitle: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ModelAction(_message.Message):
    __slots__ = ("id", "name", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("id", "name", "description", "tags", "avatar_url", "capabilities", "suggestion_prompts", "hidden", "enabled", "base_model_id", "source", "actions")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    AVATAR_URL_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SUGGESTION_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    avatar_url: str
    capabilities: ModelCapabilities
    suggestion_prompts: _containers.RepeatedCompositeFieldContainer[SuggestionPrompt]
    hidden: bool
    enabled: bool
    base_model_id: str
    source: str
    actions: _containers.RepeatedCompositeFieldContainer[ModelAction]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., avatar_url: _Optional[str] = ..., capabilities: _Optional[_Union[ModelCapabilities, _Mapping]] = ..., suggestion_prompts: _Optional[_Iterable[_Union[SuggestionPrompt, _Mapping]]] = ..., hidden: _Optional[bool] = ..., enabled: _Optional[bool] = ..., base_model_id: _Optional[str] = ..., source: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ModelAction, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("include_hidden", "include_disabled")
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DISABLED_FIELD_NUMBER: _ClassVar[int]
    include_hidden: bool
    include_disabled: bool
    def __init__(self, include_hidden: _Optional[bool] = ..., include_disabled: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "parent_id", "children_ids", "role", "model_id", "content", "image_urls", "status", "usage", "created_at", "citations", "finish_reason", "error_code", "error_message", "time_to_first_token_seconds", "total_seconds", "context_mode", "tool_steps", "action_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_IDS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URLS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_MODE_FIELD_NUMBER: _ClassVar[int]
    TOOL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    parent_id: str
    children_ids: _containers.RepeatedScalarFieldContainer[str]
    role: str
    model_id: str
    content: str
    image_urls: _containers.RepeatedScalarFieldContainer[str]
    status: str
    usage: Usage
    created_at: _timestamp_pb2.Timestamp
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    finish_reason: str
    error_code: str
    error_message: str
    time_to_first_token_seconds: float
    total_seconds: float
    context_mode: ContextMode
    tool_steps: _containers.RepeatedCompositeFieldContainer[ToolStep]
    action_id: str
    def __init__(self, id: _Optional[str] = ..., parent_id: _Optional[str] = ..., children_ids: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ..., model_id: _Optional[str] = ..., content: _Optional[str] = ..., image_urls: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., time_to_first_token_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., context_mode: _Optional[_Union[ContextMode, str]] = ..., tool_steps: _Optional[_Iterable[_Union[ToolStep, _Mapping]]] = ..., action_id: _Optional[str] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("id", "title", "messages", "current_message_id", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    current_message_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., current_message_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("limit", "cursor")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ConversationSummary(_message.Message):
    __slots__ = ("id", "title", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_cursor")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationSummary]
    next_cursor: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[ConversationSummary, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class DeleteConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class DeleteConversationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SelectAnswerRequest(_message.Message):
    __slots__ = ("conversation_id", "message_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_id: str
    def __init__(self, conversation_id: _Optional[str] = ..., message_id: _Optional[str] = ...) -> None: ...

class RegenerateRequest(_message.Message):
    __slots__ = ("conversation_id", "message_id", "params", "context_mode")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_MODE_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_id: str
    params: _struct_pb2.Struct
    context_mode: ContextMode
    def __init__(self, conversation_id: _Optional[str] = ..., message_id: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context_mode: _Optional[_Union[ContextMode, str]] = ...) -> None: ...

class RunActionRequest(_message.Message):
    __slots__ = ("conversation_id", "message_id", "action_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_id: str
    action_id: str
    def __init__(self, conversation_id: _Optional[str] = ..., message_id: _Optional[str] = ..., action_id: _Optional[str] = ...) -> None: ...

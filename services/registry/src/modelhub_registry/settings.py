"""Settings of the registry service, read from ``MODELHUB_REGISTRY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings, WorkerSettings
from modelhub_registry.domain.filter import FilterLimits
from modelhub_registry.domain.limits import Limits
from modelhub_registry.domain.login import LoginPolicy
from modelhub_registry.domain.tool_server import ToolServerLimits

ENV_PREFIX = "MODELHUB_REGISTRY_"


class RegistrySettings(ServiceSettings, DatabaseSettings, ObjectStoreSettings, WorkerSettings):
    """Owns model files, base models, users and access; emits model events through a transactional outbox."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    port: int = Field(8081, ge=0, le=65535, description="HTTP port (REST API and health).")
    bucket: str = Field("modelhub-avatars", description="S3 bucket this service owns.")
    connection_sync_seconds: float = Field(
        300, ge=0, description="How often connections are listed again (0: only on demand)."
    )
    connection_timeout_seconds: float = Field(10, gt=0, description="Timeout for calls to a connection.")
    max_token_ttl_seconds: int = Field(90 * 24 * 3600, ge=60, description="Longest lifetime of an issued token.")
    max_list_limit: int = Field(200, ge=1, description="Largest page size of GET /models.")
    max_name_length: int = Field(256, ge=1)
    max_system_prompt_length: int = Field(100_000, ge=1)
    max_tags: int = Field(32, ge=0)
    max_suggestions: int = Field(32, ge=0)
    max_avatar_bytes: int = Field(5_000_000, ge=1)
    max_avatar_pixels: int = Field(
        40_000_000, ge=1, description="Largest avatar in pixels (width × height), checked before decoding (413)."
    )
    max_import_bytes: int = Field(50_000_000, ge=1)
    max_import_items: int = Field(5_000, ge=1)
    rag_url: str = Field(
        "",
        description="Base URL of the RAG service (e.g. http://rag:8083): an import warns about knowledge"
        " collections it does not know. Empty: knowledge references are not checked, and the report says so.",
    )
    rag_timeout_seconds: float = Field(
        5, gt=0, description="How long an import waits for all its knowledge lookups; then it warns and goes on."
    )
    rag_concurrency: int = Field(8, ge=1, description="Knowledge lookups an import runs at once.")
    allow_private_urls: bool = Field(
        False,
        description="Let admins add connections to loopback and private addresses (servers inside the company"
        " network, or the dev stack). Link-local and cloud metadata addresses are refused regardless.",
    )

    tool_refresh_seconds: float = Field(
        600, ge=0, description="How often every tool server's tools are listed again (0: only on demand)."
    )
    audit_retention_days: int = Field(
        365, ge=0, description="Audit log rows older than this many days are deleted (0: kept for ever)."
    )
    tool_server_allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Hosts tool servers may be registered on (host, host:port or *.domain); empty: any host the "
        "outbound URL policy allows.",
    )
    max_tool_servers: int = Field(100, ge=0, description="Most tool servers admins may register.")
    max_tools_per_server: int = Field(128, ge=1, description="A server offering more tools is stored with an error.")
    min_tool_timeout_seconds: float = Field(0.5, gt=0, description="Smallest timeout_seconds a tool server may set.")
    max_tool_timeout_seconds: float = Field(120, gt=0, description="Largest timeout_seconds a tool server may set.")
    max_tool_result_bytes: int = Field(1_048_576, ge=1, description="Largest max_result_bytes a tool server may set.")
    max_tool_document_bytes: int = Field(
        4_194_304, ge=1, description="Largest OpenAPI document or MCP tool list discovery reads."
    )

    login_max_failures: int = Field(
        5, ge=1, description="Failed password sign-ins in a row after which an account is locked out."
    )
    login_lockout_seconds: int = Field(900, ge=1, description="How long a locked-out account refuses sign-ins.")
    login_attempts_per_minute: int = Field(
        20, ge=1, description="Password sign-ins one source address may try per minute (per process)."
    )
    login_token_ttl_seconds: int = Field(
        12 * 3600, ge=60, description="Lifetime of the token a password sign-in returns (capped by max_token_ttl)."
    )
    min_password_length: int = Field(12, ge=8, description="Shortest password an admin may set.")

    max_filters: int = Field(200, ge=0, description="Most filters admins may configure.")
    max_filter_patterns: int = Field(32, ge=1, description="Most patterns one redact or block filter may hold.")
    max_filter_pattern_chars: int = Field(
        500, ge=1, description="Longest regular expression of a filter (a bound on what matching may cost)."
    )
    max_filter_text_chars: int = Field(
        4000, ge=1, description="Longest prepend/append text, redact replacement or block message."
    )
    max_filter_cut_chars: int = Field(1_000_000, ge=1, description="Largest max_chars of a max_length filter.")
    min_filter_timeout_seconds: float = Field(0.5, gt=0, description="Smallest timeout_seconds of a webhook filter.")
    max_filter_timeout_seconds: float = Field(30, gt=0, description="Largest timeout_seconds of a webhook filter.")

    def filter_limits(self) -> FilterLimits:
        return FilterLimits(
            max_filters=self.max_filters,
            max_patterns=self.max_filter_patterns,
            max_pattern_chars=self.max_filter_pattern_chars,
            max_text_chars=self.max_filter_text_chars,
            max_cut_chars=self.max_filter_cut_chars,
            min_timeout_seconds=self.min_filter_timeout_seconds,
            max_timeout_seconds=self.max_filter_timeout_seconds,
        )

    def tool_server_limits(self) -> ToolServerLimits:
        return ToolServerLimits(
            max_tool_servers=self.max_tool_servers,
            max_tools_per_server=self.max_tools_per_server,
            min_timeout_seconds=self.min_tool_timeout_seconds,
            max_timeout_seconds=self.max_tool_timeout_seconds,
            max_result_bytes=self.max_tool_result_bytes,
            max_document_bytes=self.max_tool_document_bytes,
            allowed_hosts=self.tool_server_allowed_hosts,
        )

    def login_policy(self) -> LoginPolicy:
        return LoginPolicy(
            max_failures=self.login_max_failures,
            lockout_seconds=self.login_lockout_seconds,
            attempts_per_minute=self.login_attempts_per_minute,
            token_ttl_seconds=self.login_token_ttl_seconds,
            min_password_length=self.min_password_length,
        )

    def limits(self) -> Limits:
        return Limits(
            max_name_length=self.max_name_length,
            max_system_prompt_length=self.max_system_prompt_length,
            max_tags=self.max_tags,
            max_suggestions=self.max_suggestions,
            max_avatar_bytes=self.max_avatar_bytes,
            max_avatar_pixels=self.max_avatar_pixels,
            max_import_bytes=self.max_import_bytes,
            max_import_items=self.max_import_items,
        )

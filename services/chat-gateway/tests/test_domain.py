"""Unit tests of the domain and of the local backend's worker pool (with a fake model, no llama.cpp)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from modelhub_chat_gateway.adapters.backends.local_llama import LocalLlamaBackend
from modelhub_chat_gateway.domain.chat_template import ChatTemplateError, choose_format
from modelhub_chat_gateway.domain.chat_types import BackendRequest, ContextMode, PromptMessage, StreamChunk
from modelhub_chat_gateway.domain.conversation import MessageTree, StoredMessage, history_for
from modelhub_chat_gateway.domain.model import ModelLocation, ResolvedModel
from modelhub_chat_gateway.domain.params import to_llama_kwargs, to_ollama_options, to_openai_fields
from modelhub_chat_gateway.domain.prompt import PromptUser, fit_to_context, render_system
from modelhub_chat_gateway.errors import BackendTimeoutError, ContextTooLongError
from modelhub_chat_gateway.service_layer.generation import ContextDefaults, Generator, Timeouts


def msg(id_: str, parent: str | None, role: str, model: str = "", status: str = "done", seq: int = 0) -> StoredMessage:
    return StoredMessage(id_, "c", parent, role, content=f"{id_}-text", model_id=model, status=status, seq=seq)


def test_history_shared_follows_the_branch_and_per_model_each_models_own_answers() -> None:
    tree = MessageTree(
        [
            msg("u1", None, "user", seq=1),
            msg("a1", "u1", "assistant", "A", seq=2),
            msg("b1", "u1", "assistant", "B", seq=3),
            msg("u2", "a1", "user", seq=4),
            msg("a2", "u2", "assistant", "A", status="error", seq=5),
            msg("c2", "u2", "assistant", "C", seq=6),
        ]
    )
    shared = history_for(tree, "a1", "B", ContextMode.SHARED)
    assert [m.id for m in shared] == ["u1", "a1"]
    per_model = history_for(tree, "a1", "B", ContextMode.PER_MODEL)
    assert [m.id for m in per_model] == ["u1", "b1"]
    # A model that did not answer a turn sees the selected answer; failed answers are left out.
    assert [m.id for m in history_for(tree, "c2", "B", ContextMode.PER_MODEL)] == ["u1", "b1", "u2", "c2"]
    assert [m.id for m in history_for(tree, "a2", "A", ContextMode.SHARED)] == ["u1", "a1", "u2"]
    assert tree.latest_leaf("a1") == "c2" and tree.latest_leaf("b1") == "b1"


def test_system_prompt_variables() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7)
    rendered = render_system("Hi {{ USER_NAME }}, {{CURRENT_DATE}} {{ UNKNOWN }}", PromptUser("ann", "user"), now)
    assert rendered == "Hi ann, 2026-03-04 {{ UNKNOWN }}"


def test_fit_to_context_drops_whole_old_turns_and_refuses_what_cannot_fit() -> None:
    system = [PromptMessage("system", "s")]
    history = [
        PromptMessage("user", "a" * 300),
        PromptMessage("assistant", "b" * 300),
        PromptMessage("user", "c" * 30),
        PromptMessage("assistant", "d" * 30),
    ]
    fitted = fit_to_context(system, history, PromptMessage("user", "now"), num_ctx=200, reserve_for_answer=50)
    assert [m.content[0] for m in fitted.messages] == ["s", "c", "d", "n"] and fitted.dropped_messages == 2
    untouched = fit_to_context(system, history, PromptMessage("user", "now"), num_ctx=4000, reserve_for_answer=50)
    assert untouched.dropped_messages == 0 and len(untouched.messages) == 6
    with pytest.raises(ContextTooLongError):
        fit_to_context(system, [], PromptMessage("user", "x" * 3000), num_ctx=200, reserve_for_answer=50)


def test_params_are_translated_per_backend() -> None:
    params = {"system": "s", "max_tokens": 10, "temperature": 0.5, "stop": "END", "num_ctx": 99, "function_calling": 1}
    assert to_ollama_options(params) == {"num_ctx": 99, "temperature": 0.5, "stop": ["END"], "num_predict": 10}
    assert to_openai_fields(params) == {"temperature": 0.5, "max_tokens": 10, "stop": ["END"]}
    assert to_llama_kwargs(params) == {"temperature": 0.5, "max_tokens": 10, "stop": ["END"]}


class FakeModel:
    """Streams one chunk per word of the last message; each token takes one permit from ``gate``. Its chat
    template is that message alone, and each word is one token."""

    instances: list[FakeModel] = []
    metadata = {"tokenizer.chat_template": "{{ messages[-1]['content'] }}"}

    def __init__(self, path: Path, gate: threading.Semaphore) -> None:
        self.path = path
        self.closed = False
        self.gate = gate
        self.stopped_early = False
        self.vocabulary: list[str] = []
        FakeModel.instances.append(self)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        tokens = []
        for word in text.decode().split():
            self.vocabulary.append(word)
            tokens.append(len(self.vocabulary) - 1)
        return tokens

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False) -> bytes:
        return " ".join(self.vocabulary[t] for t in tokens).encode()

    def token_bos(self) -> int:
        return -1

    def token_eos(self) -> int:
        return -1

    def reset(self) -> None:
        pass

    def create_completion(self, prompt: list[int], **kwargs: Any) -> Iterator[dict[str, Any]]:
        words = [self.vocabulary[t] for t in prompt]

        def chunks() -> Iterator[dict[str, Any]]:
            finished = False
            try:
                for word in words:
                    self.gate.acquire(timeout=5)
                    yield {"choices": [{"text": word, "finish_reason": None}]}
                finished = True
                yield {"choices": [{"text": "", "finish_reason": "stop"}]}
            finally:
                self.stopped_early = not finished

        return chunks()

    def close(self) -> None:
        self.closed = True


class FakeFiles:
    def ensure(self, bucket: str, digest: str) -> Path:
        return Path(f"/models/{digest}")


def local(gate: threading.Semaphore, workers: int = 1, resident: int = 1) -> LocalLlamaBackend:
    FakeModel.instances.clear()
    return LocalLlamaBackend(
        FakeFiles(),  # type: ignore[arg-type]
        workers=workers,
        max_resident=resident,
        threads_per_worker=1,
        default_ctx=256,
        max_ctx=512,
        loader=lambda path, n_ctx, threads: FakeModel(path, gate),
    )


async def collect(backend: LocalLlamaBackend, digest: str, text: str) -> str:
    request = BackendRequest("m", (PromptMessage("user", text),))
    location = ModelLocation("local", "m", store_bucket="b", model_digest=digest)
    return "".join([c.text async for c in backend.stream(request, location)])


async def test_local_workers_keep_models_resident_lru_and_run_in_parallel() -> None:
    gate = threading.Semaphore(1000)
    backend = local(gate, workers=2, resident=1)
    try:
        assert await asyncio.gather(collect(backend, "d1", "a b"), collect(backend, "d2", "c d")) == ["ab", "cd"]
        assert sorted(path for paths in backend.resident for path in paths) == ["/models/d1", "/models/d2"]
        # A warm worker is preferred; with one slot per worker a third model evicts the least recently used.
        assert await collect(backend, "d1", "e") == "e"
        assert len(FakeModel.instances) == 2
        await collect(backend, "d3", "f")
        assert [m.closed for m in FakeModel.instances].count(True) == 1
    finally:
        backend.close()


async def test_closing_a_local_stream_stops_generation_between_tokens() -> None:
    gate = threading.Semaphore(1)  # the first token only, until the test releases more
    backend = local(gate)
    try:
        request = BackendRequest("m", (PromptMessage("user", "one two three four five six"),))
        location = ModelLocation("local", "m", store_bucket="b", model_digest="d1")
        stream = backend.stream(request, location)
        first = await anext(stream)
        assert first.text == "one"
        await stream.aclose()
        gate.release(100)
        for _ in range(100):
            if FakeModel.instances[0].stopped_early:
                break
            await asyncio.sleep(0.02)
        assert FakeModel.instances[0].stopped_early
        # The worker is free again for the next request.
        assert await collect(backend, "d1", "again") == "again"
    finally:
        backend.close()


class StallingBackend:
    def __init__(self, first_delay: float, then_stall: bool) -> None:
        self.first_delay = first_delay
        self.then_stall = then_stall
        self.closed = False

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        try:
            await asyncio.sleep(self.first_delay)
            yield StreamChunk("hello")
            if self.then_stall:
                await asyncio.sleep(60)
            yield StreamChunk(finish_reason="stop")
        finally:
            self.closed = True


@pytest.mark.parametrize(
    ("first_delay", "then_stall", "code"), [(5.0, False, "first_token_timeout"), (0.0, True, "idle_timeout")]
)
async def test_generator_timeouts_close_the_backend(first_delay: float, then_stall: bool, code: str) -> None:
    backend = StallingBackend(first_delay, then_stall)
    generator = Generator({"ollama": backend}, Timeouts(first_token=0.2, idle=0.2), ContextDefaults(2048, 64))
    model = ResolvedModel("m", "m", "b", "ollama", ("m", "b"), ModelLocation("ollama", "b", url="http://x"))
    with pytest.raises(BackendTimeoutError) as timed_out:
        async for _ in generator.stream(model, [PromptMessage("user", "hi")], {}):
            pass
    assert timed_out.value.code == code and backend.closed


def test_prompt_formats_come_from_the_model_in_a_fixed_order() -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    chatml = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    own = choose_format({"tokenizer.chat_template": chatml}, "{{ .Prompt }}", model="m", eos_token="<|im_end|>")
    assert own.source == "gguf" and own.warning is None and own.stop == ("<|im_end|>",)
    assert own.render(conversation).endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")

    recorded_jinja = choose_format({}, chatml, model="m")
    assert recorded_jinja.source == "recorded" and recorded_jinja.render(conversation) == own.render(conversation)

    gemma = choose_format({"general.architecture": "gemma3"}, None, model="g")
    assert gemma.source == "family" and gemma.warning is None and "<end_of_turn>" in gemma.stop
    assert gemma.render(conversation) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )

    raw = choose_format({"general.architecture": "llama"}, "  ", model="plain")
    assert raw.source == "raw" and raw.warning is not None and "'plain'" in raw.warning
    assert raw.render(conversation) == "Be brief.\n\nHi\n\nHello.\n\nBye"


def test_a_template_that_refuses_a_system_role_gets_it_in_the_first_user_message() -> None:
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
    )
    fmt = choose_format({"tokenizer.chat_template": strict}, None, model="m")
    rendered = fmt.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert rendered == "[user] S\n\nU\n[assistant]"
    broken = choose_format({"tokenizer.chat_template": "{{ raise_exception('nope') }}"}, None, model="m")
    with pytest.raises(ChatTemplateError, match="nope"):
        broken.render([{"role": "user", "content": "U"}])

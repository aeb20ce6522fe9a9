"""A first chat that answers: the embedded instruction-tuned SmolLM2 through gRPC, the CLI and the OpenAI-compatible
API, each conversation formatted with the model's own chat template; the fallbacks when a GGUF has none; and
answers that end with no text reported as such."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from conftest import Gateway, PromptRecorder, RegistryHandle

# As the conftest registers them.
GEMMA = "gemma3:270m"
SMOLLM2 = "smollm2:135m"
UNTEMPLATED = "untemplated:135m"
RECORDED = "recorded-template:135m"
QUESTION = "What is the capital of France?"
CHATML_TURN = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def warning_codes(warnings: list[Any]) -> list[str]:
    return [w.code for w in warnings]


async def test_smollm2_answers_through_grpc_with_its_own_chatml_template(
    gateway: Gateway, prompt_recorder: PromptRecorder, smollm2_file: tuple[Any, str]
) -> None:
    turn = await gateway.chat([SMOLLM2], QUESTION)
    answer = turn.answers[SMOLLM2]
    assert answer.error is None, answer.error
    assert answer.text.strip(), "the instruction-tuned model gave an empty answer"
    assert answer.done is not None and answer.done.usage.completion_tokens > 0
    assert warning_codes(answer.warnings) == []
    # The GGUF's own Jinja template formatted it: ChatML, with the base model's system prompt.
    prompt = prompt_recorder.last_for(smollm2_file[1])
    assert prompt == (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{CHATML_TURN}"), prompt
    assert "[INST]" not in prompt
    # The prompt tokens are counted from the real tokenized prompt.
    assert answer.done.usage.prompt_tokens > 10

    # Greedy decoding with a seed: the same question gets the same answer.
    again = await gateway.chat([SMOLLM2], QUESTION)
    assert again.answers[SMOLLM2].text == answer.text

    # A follow-up turn carries the history in the same template.
    follow = await gateway.chat([SMOLLM2], "And of Italy?", conversation_id=turn.conversation_id)
    assert follow.answers[SMOLLM2].error is None
    prompt = prompt_recorder.last_for(smollm2_file[1])
    assert f"{CHATML_TURN}{answer.text}<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n" in prompt, prompt


async def test_two_embedded_models_side_by_side_each_in_its_own_format(
    gateway: Gateway, prompt_recorder: PromptRecorder, gemma_file: tuple[Any, str], smollm2_file: tuple[Any, str]
) -> None:
    turn = await gateway.chat([SMOLLM2, GEMMA], "Tell me a joke")
    assert turn.turn_done
    assert turn.answers[SMOLLM2].error is None and turn.answers[SMOLLM2].text.strip()
    assert turn.answers[GEMMA].error is None
    # Gemma's GGUF has no template: its family's turn format is used, without a warning (its tokenizer adds <bos>).
    assert "no_chat_template" not in warning_codes(turn.answers[GEMMA].warnings)
    assert (
        prompt_recorder.last_for(gemma_file[1])
        == "<bos><start_of_turn>user\nTell me a joke<end_of_turn>\n<start_of_turn>model\n"
    )
    assert "<|im_start|>user\nTell me a joke<|im_end|>" in prompt_recorder.last_for(smollm2_file[1])


async def test_a_gguf_without_a_template_uses_the_recorded_one_else_plain_text_with_a_warning(
    gateway: Gateway, prompt_recorder: PromptRecorder, untemplated_file: tuple[Any, str]
) -> None:
    # The template recorded when the model was stored (an Ollama Go template) formats it.
    recorded = await gateway.chat([RECORDED], QUESTION)
    answer = recorded.answers[RECORDED]
    assert answer.error is None, answer.error
    assert warning_codes(answer.warnings) == [] and answer.text.strip()
    prompt = prompt_recorder.last_for(untemplated_file[1])
    assert prompt == f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{CHATML_TURN}", prompt

    # Nothing to go by (no template in the GGUF, none recorded, a family with no known format): plain text, and
    # the answer says so.
    raw = await gateway.chat([UNTEMPLATED], QUESTION)
    answer = raw.answers[UNTEMPLATED]
    assert answer.error is None, answer.error
    assert "no_chat_template" in warning_codes(answer.warnings)
    message = next(w.message for w in answer.warnings if w.code == "no_chat_template")
    assert "plain text" in message and UNTEMPLATED in message
    prompt = prompt_recorder.last_for(untemplated_file[1])
    assert prompt == f"You are a helpful assistant.\n\n{QUESTION}", prompt


async def test_an_answer_with_no_text_is_reported_not_a_silent_success(
    gateway: Gateway, registry: RegistryHandle
) -> None:
    empty = "empty-x:latest"
    turn = await gateway.chat([empty], "hello")
    answer = turn.answers[empty]
    assert answer.error is None and answer.done is not None and answer.text == ""
    assert warning_codes(answer.warnings) == ["empty_answer"]
    assert "produced no output" in answer.warnings[0].message

    api_key = gateway.metadata()[0][1].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
        body = {"model": empty, "messages": [{"role": "user", "content": "hello"}]}
        reply = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert reply.status_code == 200, reply.text
        assert [w["code"] for w in reply.json()["warnings"]] == ["empty_answer"]


@pytest.fixture
async def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    api_key = gateway.metadata()[0][1].removeprefix("Bearer ")
    return openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key=api_key, max_retries=0)


async def test_the_openai_sdk_gets_an_answer_from_smollm2(
    sdk: openai.AsyncOpenAI, prompt_recorder: PromptRecorder, smollm2_file: tuple[Any, str]
) -> None:
    completion = await sdk.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": QUESTION}], temperature=0, seed=42
    )
    text = completion.choices[0].message.content or ""
    assert text.strip(), "the OpenAI-compatible endpoint returned an empty answer"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert prompt_recorder.last_for(smollm2_file[1]).endswith(CHATML_TURN)

    stream = await sdk.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": QUESTION}], temperature=0, seed=42, stream=True
    )
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert streamed == text


async def test_modelhub_chat_defaults_to_smollm2_and_prints_its_answer(
    gateway: Gateway, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from modelhub_cli.main import app

    monkeypatch.delenv("MODELHUB_DEFAULT_MODEL", raising=False)
    env = {
        "MODELHUB_GATEWAY_GRPC": f"127.0.0.1:{gateway.app.state.grpc_port}",
        "MODELHUB_TOKEN": gateway.metadata()[0][1].removeprefix("Bearer "),
        "MODELHUB_HOME": str(tmp_path),
        "COLUMNS": "200",
    }
    result = await asyncio.to_thread(CliRunner().invoke, app, ["chat", QUESTION], env=env)
    assert result.exit_code == 0, result.output
    assert SMOLLM2 in result.output and "done" in result.output
    # The panel holds the model's words, not only the frame and the status line.
    expected = (await gateway.chat([SMOLLM2], QUESTION)).answers[SMOLLM2].text.strip()
    assert expected and expected.split()[0] in result.output
    assert "0 tokens" not in result.output

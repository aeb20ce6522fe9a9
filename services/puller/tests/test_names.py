"""Model names as users type them: what is accepted, what it becomes, and what is refused (and why)."""

from __future__ import annotations

import pytest

from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.errors import InvalidNameError


@pytest.mark.parametrize(
    ("typed", "full", "base_model_id"),
    [
        ("llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("library/llama3.2:latest", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("ollama run llama3.2:1b", "registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("  Ollama   PULL  qwen2.5:0.5b ", "registry.ollama.ai/library/qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("someone/tiny:q4", "registry.ollama.ai/someone/tiny:q4", "someone/tiny:q4"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        ),
        ("huggingface.co/acme/Tiny-GGUF", "hf.co/acme/Tiny-GGUF:latest", "hf.co/acme/Tiny-GGUF:latest"),
        ("https://hf.co/acme/tiny:IQ2_M", "hf.co/acme/tiny:IQ2_M", "hf.co/acme/tiny:IQ2_M"),
        ("127.0.0.1:5000/library/m:v1", "127.0.0.1:5000/library/m:v1", "127.0.0.1:5000/library/m:v1"),
        ("ollama pull hf.co/a/b:Q8_0", "hf.co/a/b:Q8_0", "hf.co/a/b:Q8_0"),
    ],
)
def test_accepted_names_normalise(typed: str, full: str, base_model_id: str) -> None:
    name = parse_model_name(typed)
    assert name.full == full
    assert name.base_model_id == base_model_id


def test_plain_http_scheme_is_kept_for_the_insecure_check() -> None:
    assert parse_model_name("http://127.0.0.1:5000/library/m").scheme == "http"
    assert parse_model_name("llama3.2").scheme == "https"


def test_manifest_key_follows_the_store_layout() -> None:
    name = parse_model_name("hf.co/acme/tiny:Q4_K_M")
    assert name.manifest_key == "manifests/hf.co/acme/tiny/Q4_K_M"


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "empty"),
        ("ollama run ", "empty"),
        ("llama3.2:", "tag after ':' is empty"),
        ("a/b/c/d", "too many parts"),
        ("a//b", "empty part"),
        ("../etc/passwd", "host '..' is not a valid host"),
        ("library/..:latest", "model '..' is not valid"),
        ("my model", "no spaces"),
        ("llama3.2:1b;rm", "tag '1b;rm' is not valid"),
        ("ns.with.dots/model", "namespace 'ns.with.dots' is not valid"),
        ("llama@sha256:abc", "by digest"),
        ("ftp://host/a/b", "only http:// and https://"),
        ("x" * 81, "longer than 80"),
        ("bad_host!/a/b", "not a valid host"),
    ],
)
def test_invalid_names_are_refused_with_a_reason(typed: str, says: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        parse_model_name(typed)
    assert says in caught.value.message
    assert caught.value.code == "invalid_name"

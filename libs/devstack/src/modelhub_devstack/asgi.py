"""An ASGI app served by uvicorn in a background thread of this process, for tests that talk HTTP to it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK, pick_free_port


@contextlib.contextmanager
def serve_in_thread(
    app: Any,
    *,
    name: str,
    port: int | None = None,
    start_timeout: float = 60.0,
    stop_timeout: float = 30.0,
    **config: Any,
) -> Iterator[str]:
    """Serve ``app`` on loopback (``port``, or a free one) until the block ends; yields its base URL.

    The app's lifespan runs (start-up failures surface as :class:`DevstackError` naming ``name``), and
    leaving the block asks uvicorn to shut down gracefully and waits for the thread.
    """
    chosen = port if port is not None else pick_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=chosen, log_config=None, **config))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=stop_timeout)
            raise DevstackError(f"{name} did not start within {start_timeout:.0f} s; its log above says why")
        time.sleep(0.02)
    try:
        yield f"http://{LOOPBACK}:{chosen}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout)

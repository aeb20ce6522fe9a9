"""The console's Models workspace with 10,000 model files: time to first byte and to the whole page, next to
the registry API call it wraps, in one run; the page's rendering alone; and time to interactive in chromium.

    .venv/bin/python bench/console.py [--models N] [--samples S] [--keep] [--no-browser]

One run starts real NATS (JetStream), PostgreSQL+pgvector and SeaweedFS S3 on free loopback ports in a
temporary directory, the registry and the console each as its own process (`python -m modelhub_<name>
serve`), and imports N model files (tags, descriptions, a tenth hidden) through the registry's import API.
Then, one request at a time, for a user signed in to the console with a token:

* **registry API**: `GET /api/v1/models?limit=24` (the console's page size) with the same token — the call
  the workspace page makes;
* **console page**: `GET /models` with the session cookie (that call, plus the session lookup, Jinja2
  rendering and the HTML on the wire); and the same for the second page (`cursor=`) and a tag filter;
* **render only**: the workspace template rendered in this process from the same 24 models;
* **time to interactive**: headless chromium loading `/models` (Navigation Timing `domInteractive` and
  `loadEventEnd`, htmx and the stylesheet included), when chromium and chromedriver are installed.

TTFB is until the response headers arrive, "whole" until the last byte. Progress goes to stderr, the
markdown to stdout. Every process started is stopped by its PID at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx
from _support import (
    BenchStack,
    ServiceProcess,
    machine_summary,
    markdown_table,
    percentile,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from rich.console import Console

from modelhub_common.auth import issue_token
from modelhub_console.entrypoints.pages_models import card
from modelhub_console.entrypoints.web import templates
from modelhub_devstack import pick_free_port
from modelhub_registry import bootstrap as registry_bootstrap
from modelhub_registry.settings import RegistrySettings

STDERR = Console(stderr=True)
PAGE_SIZE = 24
TAGS = ("coding", "writing", "math", "support", "legal", "education", "translation", "research", "sql", "chat")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def log(text: str) -> None:
    STDERR.print(text)


def model_files(count: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    return [
        {
            "id": f"bench-{n:05d}",
            "name": f"Bench model {n}",
            "base_model_id": "llama3.1:8b",
            "params": {"system": "You are a helpful assistant.", "temperature": round(rng.random(), 2)},
            "meta": {
                "description": f"Model file number {n} for the console benchmark",
                "tags": [{"name": t} for t in rng.sample(TAGS, 2)],
                "suggestion_prompts": [{"title": ["Hello", ""], "content": "Say hello"}],
                "hidden": n % 10 == 9,
            },
        }
        for n in range(count)
    ]


async def timed_get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[float, float, int]:
    """(seconds to the response headers, seconds to the last byte, bytes)."""
    began = time.perf_counter()
    async with client.stream("GET", url, **kwargs) as response:
        first = time.perf_counter() - began
        body = await response.aread()
        whole = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {body[:200]!r}")
    return first, whole, len(body)


async def measure(
    registry_url: str, console_url: str, viewer: str, samples: int
) -> tuple[list[list[str]], dict[str, Any], str]:
    """The HTTP figures; also returns the first page the API gave and the session id."""
    rows: list[list[str]] = []
    async with (
        httpx.AsyncClient(base_url=registry_url, timeout=60) as api,
        httpx.AsyncClient(base_url=console_url, timeout=60) as web,
    ):
        page = await web.get("/signin")
        csrf = CSRF_RE.search(page.text)
        assert csrf, "no CSRF token on the sign-in page"
        signed_in = await web.post("/signin", data={"csrf_token": csrf.group(1), "token": viewer})
        assert signed_in.status_code == 303, signed_in.text
        session = web.cookies.get("modelhub_session")
        assert session, "the console did not open a session"
        viewer_auth = {"Authorization": f"Bearer {viewer}"}
        first_page = (await api.get("/api/v1/models", params={"limit": PAGE_SIZE}, headers=viewer_auth)).json()
        cursor = first_page["next_cursor"]
        assert len(first_page["items"]) == PAGE_SIZE and cursor, "the viewer should see full pages"
        cases = [
            ("first page", {"limit": PAGE_SIZE}, {}),
            ("second page", {"limit": PAGE_SIZE, "cursor": cursor}, {"cursor": cursor}),
            ("tag filter", {"limit": PAGE_SIZE, "tag": "sql"}, {"tag": "sql"}),
        ]
        for name, api_params, web_params in cases:
            for _ in range(20):  # warm both paths (connections, plans, template cache)
                await timed_get(api, "/api/v1/models", params=api_params, headers=viewer_auth)
                await timed_get(web, "/models", params=web_params)
            api_first, api_whole, web_first, web_whole, api_plain = [], [], [], [], []
            api_bytes = web_bytes = 0
            # Interleaved, so drift on the shared machine hits both sides alike.
            for _ in range(samples):
                f, w, api_bytes = await timed_get(api, "/api/v1/models", params=api_params, headers=viewer_auth)
                api_first.append(f)
                api_whole.append(w)
                began = time.perf_counter()
                (await api.get("/api/v1/models", params=api_params, headers=viewer_auth)).raise_for_status()
                api_plain.append(time.perf_counter() - began)
                f, w, web_bytes = await timed_get(web, "/models", params=web_params)
                web_first.append(f)
                web_whole.append(w)
            ratio = percentile(web_first, 50) / percentile(api_whole, 50)
            rows.append([f"registry API, {name}", *summary(api_first), *summary(api_whole), f"{api_bytes:,}", ""])
            rows.append([f"registry API, {name}, plain get", "", "", *summary(api_plain), f"{api_bytes:,}", ""])
            rows.append(
                [f"console page, {name}", *summary(web_first), *summary(web_whole), f"{web_bytes:,}", f"{ratio:.2f}x"]
            )
    return rows, first_page, session


def summary(samples: list[float]) -> tuple[str, str]:
    return f"{percentile(samples, 50) * 1000:.2f}", f"{percentile(samples, 99) * 1000:.2f}"


def time_to_interactive(console_url: str, session: str, samples: int) -> list[tuple[float, float]] | None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        log("chromium or chromedriver missing: no time-to-interactive figures")
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(console_url + "/healthz")
        driver.add_cookie({"name": "modelhub_session", "value": session, "path": "/"})
        found: list[tuple[float, float]] = []
        for _ in range(samples):
            driver.get(console_url + "/models")
            timing = driver.execute_script(
                "var n = performance.getEntriesByType('navigation')[0];"
                "return [n.domInteractive, n.loadEventEnd || performance.now()];"
            )
            found.append((float(timing[0]) / 1000, float(timing[1]) / 1000))
        return found
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium time-to-interactive figures")
    args = parser.parse_args()
    sigterm_raises_interrupt()
    secret = secrets.token_urlsafe(48)
    admin = issue_token(secret, subject="root", role="admin", ttl_seconds=24 * 3600)
    viewer = issue_token(secret, subject="erin", role="user", ttl_seconds=24 * 3600)
    with ExitStack() as cleanup:
        root = cleanup.enter_context(scratch_dir("mh-con-", keep=args.keep, log=log))
        stack = cleanup.enter_context(BenchStack(root, durable_postgres=False))
        stack.start(log)
        s3 = stack.s3_endpoint
        registry_values: dict[str, object] = {
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "nats_url": stack.nats.url,
            "jwt_secret": secret,
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
            "port": pick_free_port(),
            "database_url": stack.database("modelhub_registry"),
        }
        asyncio.run(registry_bootstrap.run_migrations(RegistrySettings(**registry_values)))  # type: ignore[arg-type]
        registry = ServiceProcess(
            root / "registry",
            module="modelhub_registry",
            env=service_env("MODELHUB_REGISTRY_", registry_values),
            port=int(str(registry_values["port"])),
            name="registry",
        )
        registry.start()
        cleanup.callback(registry.stop)
        console_values: dict[str, object] = {
            "host": "127.0.0.1",
            "log_level": "WARNING",
            "port": pick_free_port(),
            "registry_url": registry.base_url,
            "gateway_grpc": "127.0.0.1:9",  # the workspace never calls the gateway
            "page_size": PAGE_SIZE,
        }
        console = ServiceProcess(
            root / "console",
            module="modelhub_console",
            env=service_env("MODELHUB_CONSOLE_", console_values),
            port=int(str(console_values["port"])),
            name="console",
        )
        console.start()
        cleanup.callback(console.stop)
        log("stack, registry and console are up")

        auth = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=registry.base_url, timeout=300) as api:
            api.post("/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=auth).raise_for_status()
            files = model_files(args.models)
            for start in range(0, len(files), 5000):
                # Public, so the viewer (who owns nothing) reads them through the access filter's public branch.
                batch = [{**f, "access_control": None} for f in files[start : start + 5000]]
                began = time.perf_counter()
                api.post("/api/v1/models/import", content=json.dumps(batch), headers=auth).raise_for_status()
                log(f"imported {start + len(batch)} model files ({time.perf_counter() - began:.1f} s)")

        rows, first_page, session = asyncio.run(measure(registry.base_url, console.base_url, viewer, args.samples))
        log("HTTP figures done")

        env = templates().env
        template = env.get_template("models.html")
        cards = [card(m) for m in first_page["items"]]
        context = {
            "session": None,
            "flashes": [],
            "csrf_field": "csrf_token",
            "cards": cards,
            "q": "",
            "tag": "",
            "tags": sorted({t for c in cards for t in c["tags"]}),
            "show_hidden": False,
            "first_page": True,
            "first_url": "/models",
            "next_url": "/models?cursor=x",
        }

        class _Session:
            csrf = "x" * 43
            subject = "erin"
            is_admin = False

        context["session"] = _Session()
        render: list[float] = []
        for _ in range(args.samples):
            began = time.perf_counter()
            template.render(context)
            render.append(time.perf_counter() - began)

        tti = None if args.no_browser else time_to_interactive(console.base_url, session, 30)

    print(f"## Console workspace ({args.models:,} model files, {PAGE_SIZE} a page)\n")
    print(machine_summary() + "\n")
    print(
        markdown_table(
            ["request", "TTFB p50 ms", "TTFB p99 ms", "whole p50 ms", "whole p99 ms", "bytes", "page TTFB / API"],
            rows,
        )
    )
    print(
        f"\nRendering the workspace template alone (24 cards): p50 {percentile(render, 50) * 1000:.2f} ms,"
        f" p99 {percentile(render, 99) * 1000:.2f} ms (target: ≤ 20 ms p50)."
    )
    if tti:
        interactive = [t[0] for t in tti]
        loaded = [t[1] for t in tti]
        print(
            f"Chromium, /models: domInteractive p50 {statistics.median(interactive) * 1000:.1f} ms,"
            f" load event end p50 {statistics.median(loaded) * 1000:.1f} ms ({len(tti)} loads)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

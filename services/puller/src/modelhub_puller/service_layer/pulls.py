"""What the API does with pulls: request (or join), read, list and cancel. Work happens in the worker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import Principal
from modelhub_common.outbox import enqueue
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.adapters.registry_client import RegistryClient
from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.domain.pull import PullJob, PullState, Target
from modelhub_puller.errors import ForbiddenError, NotFoundError, OllamaNotConfiguredError
from modelhub_puller.service_layer import events


@dataclass(frozen=True)
class PullPolicy:
    pull_groups: Sequence[str]
    admins_may_pull: bool
    ollama_configured: bool

    def check(self, principal: Principal) -> None:
        if principal.is_admin and self.admins_may_pull:
            return
        if principal.in_any_group(self.pull_groups):
            return
        groups = ", ".join(self.pull_groups) or "none"
        raise ForbiddenError(f"pulling models needs the admin role or membership of one of these groups: {groups}")


class PullService:
    def __init__(
        self, pool: AsyncConnectionPool, repo: PullRepository, registry: RegistryClient, policy: PullPolicy
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._registry = registry
        self.policy = policy

    async def request(self, principal: Principal, model: str, target: Target) -> tuple[PullJob, bool]:
        """Queues a pull, or returns the active pull of the same model and target (second value False)."""
        self.policy.check(principal)
        name = parse_model_name(model)
        self._registry.check_allowed(name)
        if target is Target.OLLAMA and not self.policy.ollama_configured:
            raise OllamaNotConfiguredError("target 'ollama' needs MODELHUB_PULLER_OLLAMA_URL to be set")
        for _ in range(3):
            async with self._pool.connection() as conn, conn.transaction():
                job = await self._repo.insert_job(
                    conn,
                    model=name.full,
                    base_model_id=name.base_model_id,
                    target=target,
                    requested_by=principal.subject,
                )
                if job is not None:
                    await enqueue(conn, events.REQUESTED, events.requested(job, principal))
                    return job, True
                existing = await self._repo.active_job(conn, name.full, target)
                if existing is not None:
                    existing.layers = await self._repo.layers(conn, existing.id)
                    return existing, False
            # The active pull ended between the insert and the lookup: try again.
        raise RuntimeError("could not queue or find the pull")

    async def get(self, principal: Principal, pull_id: str) -> PullJob:
        self.policy.check(principal)
        return await self.load(pull_id)

    async def load(self, pull_id: str) -> PullJob:
        async with self._pool.connection() as conn:
            job = await self._repo.get_job(conn, _uuid(pull_id))
        if job is None:
            raise NotFoundError(f"pull {pull_id} does not exist")
        return job

    async def list_jobs(self, principal: Principal, *, active_only: bool, limit: int) -> list[PullJob]:
        self.policy.check(principal)
        async with self._pool.connection() as conn:
            return await self._repo.list_jobs(conn, active_only=active_only, limit=limit)

    async def cancel(self, principal: Principal, pull_id: str) -> PullJob:
        """Cancels a queued pull at once; a running one is stopped by its replica (via an event)."""
        self.policy.check(principal)
        pull_id = _uuid(pull_id)
        async with self._pool.connection() as conn, conn.transaction():
            job = await self._repo.get_job(conn, pull_id, with_layers=False, lock=True)
            if job is None:
                raise NotFoundError(f"pull {pull_id} does not exist")
            if not job.state.active:
                return await self._repo.get_job(conn, pull_id) or job
            await self._repo.request_cancel(conn, pull_id)
            if job.state is PullState.QUEUED:
                await self._repo.finish_job(conn, pull_id, PullState.CANCELLED, status="cancelled")
                await enqueue(conn, events.CANCELLED, events.cancelled(job))
            else:
                await enqueue(conn, events.CANCEL_REQUESTED, events.cancel_requested(job, principal))
            return await self._repo.get_job(conn, pull_id) or job


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFoundError(f"pull {value[:60]!r} does not exist (not a pull id)") from exc

"""Find the step to diagnose when a user gave only a job instance (a BK-JOB link without a step)."""

from __future__ import annotations

from collections.abc import Collection

from bot.clients.bkjob import BkJobClient


class StepLocator:
    def __init__(self, bkjob: BkJobClient, *, failed_statuses: Collection[int]) -> None:
        self.bkjob = bkjob
        self.failed_statuses = frozenset(failed_statuses)

    async def single_failed_step(self, scope_type: str, scope_id: int, task_instance_id: int) -> int | None:
        """The job's failed step when exactly one failed; None when none or several did (ask the user)."""
        status = await self.bkjob.get_job_instance_status(
            scope_id, task_instance_id, bk_scope_type=scope_type
        )
        failed = [s for s in status.steps if s.status in self.failed_statuses]
        return failed[0].step_instance_id if len(failed) == 1 else None

"""Business ids a record carries: the GSE task key, result-handle names, event toStrings, `key=value` forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bot.diagnosis.extract.kv import as_int
from bot.diagnosis.records import LogRecord


@dataclass(frozen=True, slots=True)
class GseTaskKey:
    """`Job:<task>-GseTask:<gse>:<step>:<executeCount>[:<batch>]` (batch only for rolling steps)."""

    task_instance_id: int
    gse_task_id: int
    step_instance_id: int
    execute_count: int
    batch: int | None
    text: str


_GSE_KEY_RE = re.compile(r"Job:(\d+)-GseTask:(\d+):(\d+):(\d+)(?::(\d+))?")


def parse_gse_key(text: str) -> GseTaskKey | None:
    m = _GSE_KEY_RE.search(text)
    if m is None:
        return None
    return GseTaskKey(
        int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), as_int(m.group(5)), m.group(0)
    )


@dataclass(frozen=True, slots=True)
class RecordIds:
    """Business ids a record carries (any of them may be unknown)."""

    task: int | None = None
    step: int | None = None
    gse_task: int | None = None
    execute_count: int | None = None
    batch: int | None = None
    trace_id: str | None = None

    @property
    def empty(self) -> bool:
        return (
            self.task is None
            and self.step is None
            and self.gse_task is None
            and self.execute_count is None
            and self.batch is None
        )

    def inherit(self, ctx: RecordIds | None) -> RecordIds:
        """Fill unknown ids from a context record (same thread and trace) when they do not conflict.

        A record keeps its own level of detail: a task-only line (job event) takes no step from the
        context, and a step or GSE-task line takes the run ids only from a context of the same step
        or GSE task.
        """
        if ctx is None:
            return self
        if self.empty:
            return replace(ctx, trace_id=self.trace_id or ctx.trace_id)
        if self.task is not None and ctx.task is not None and self.task != ctx.task:
            return self
        task = self.task if self.task is not None else ctx.task
        job_level = self.step is None and self.gse_task is None and self.execute_count is None
        same_step = self.step is None or ctx.step == self.step
        same_gse = (
            self.gse_task is None
            or ctx.gse_task == self.gse_task
            or (ctx.gse_task is None and self.step is not None)
        )
        if job_level or not same_step or not same_gse:
            return replace(self, task=task)
        return RecordIds(
            task=task,
            step=self.step if self.step is not None else ctx.step,
            gse_task=self.gse_task if self.gse_task is not None else ctx.gse_task,
            execute_count=self.execute_count if self.execute_count is not None else ctx.execute_count,
            batch=self.batch if self.batch is not None else ctx.batch,
            trace_id=self.trace_id or ctx.trace_id,
        )


# Id forms other than the GSE task key; the last group of each alternative names it (`m.lastgroup`).
_IDS_RE = re.compile(
    r"(?:Script|File)TaskResultHandle-(?P<hj>\d+)-(?P<hs>\d+)"
    r"|gse_task:(?P<rs>\d+):(?P<rc>\d+):(?P<rb>\d+)"
    r"|job:(?:running:gse:task|result:handle):(?P<lg>\d+)"
    r"|taskInstance (?P<ej>\d+) evicted"
    r"|StepInstance (?P<fs>\d+) already"
    r"|stepInstance: (?P<ps2>\d+)"
    r"|(?:^|step)\[(?P<sk>\d+)(?:_(?P<skc>\d+))?\]"
    r"|\bgseTaskId=(?P<gid>\d+)"
    r"|\b(?P<key>jobInstanceId|taskInstanceId|TaskInstanceId|stepInstanceId|executeCount|batch|job_instance_id)"
    r"\"?\s*[=:]\s*\"?(?P<val>\d+)"
)
_KEY_FIELD = {
    "jobInstanceId": "task",
    "taskInstanceId": "task",
    "TaskInstanceId": "task",
    "job_instance_id": "task",
    "stepInstanceId": "step",
    "executeCount": "execute_count",
    "batch": "batch",
}


def ids_in_text(message: str, trace_id: str | None = None) -> RecordIds:
    """Ids found in a message: GSE task key, result-handle names, event toStrings, `key=value` forms.

    The GSE task key `Job:<task>-GseTask:<gse>:<step>:<n>[:<batch>]` wins over other forms; then the
    named forms (result handle, lock keys, step keys); `key=value` fields come last. GSE's own task id
    (`Start gse task successfully, gseTaskId: X`) is not JOB's gse task id and is not taken.
    """
    found: dict[str, int] = {}
    m = _GSE_KEY_RE.search(message)
    if m is not None:
        found["task"], found["gse_task"] = int(m.group(1)), int(m.group(2))
        found["step"], found["execute_count"] = int(m.group(3)), int(m.group(4))
        if m.group(5) is not None:
            found["batch"] = int(m.group(5))
    if len(found) < 4:
        weak: dict[str, int] = {}  # key=value forms, used only where nothing better was found
        for m in _IDS_RE.finditer(message):
            last = m.lastgroup
            strong: tuple[tuple[str, str | None], ...]
            if last == "val":
                weak.setdefault(_KEY_FIELD[m.group("key")], int(m.group("val")))
                continue
            if last == "gid":
                weak.setdefault("gse_task", int(m.group("gid")))
                continue
            if last == "hs":
                strong = (("task", m.group("hj")), ("step", m.group("hs")))
            elif last == "rb":
                strong = (("step", m.group("rs")), ("execute_count", m.group("rc")), ("batch", m.group("rb")))
            elif last == "lg":
                strong = (("gse_task", m.group("lg")),)
            elif last == "ej":
                strong = (("task", m.group("ej")),)
            elif last == "fs":
                strong = (("step", m.group("fs")),)
            elif last == "ps2":
                strong = (("step", m.group("ps2")),)
            else:  # sk / skc
                strong = (("step", m.group("sk")), ("execute_count", m.group("skc")))
            for fld, value in strong:
                if value is not None:
                    found.setdefault(fld, int(value))
        for fld, v in weak.items():
            found.setdefault(fld, v)
    return RecordIds(
        task=found.get("task"),
        step=found.get("step"),
        gse_task=found.get("gse_task"),
        execute_count=found.get("execute_count"),
        batch=found.get("batch"),
        trace_id=trace_id,
    )


def ids_in(record: LogRecord) -> RecordIds:
    """Ids a record carries itself (first line only; stack frames hold none). See `runs.attribute` for
    ids inherited from the surrounding records of the same thread."""
    return ids_in_text(record.message, record.trace_id)

"""The component table (config/components.toml): it loads, names the component behind an API, and
finds a component that decided a failure without its reason showing in the engine logs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.core.resources import data_file
from bot.diagnosis.components import ComponentsError, components, load_components, parse_components
from tests.diagnosis.signatures.chains import S, chain

GOOD = data_file("config", "components.toml").read_text(encoding="utf-8")
TASK = "9f2c41ab07d34e58a1c6b7e0d5f31a29"
BATCH = "ea2fb896f2517d9f97e051dc2eab6aa6"
STARTED = (
    f"[{S}_0]: fileSourceDownloadTask started, batchTaskId:{BATCH},taskInfoList=[TaskInfoDTO(taskId={TASK}, "
    "fileSourceName=cos-release, publicFlag=false, cloudId=0, ip=10.16.40.23)]"
)


def file_run(error: str) -> list:
    return chain(
        ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
        ("INFO", STARTED),
        ("INFO", f"[{S}_0]: fileSourceTaskId={TASK},status=FAILED,message=release/app.tgz|0|{error}"),
        ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
    )


def test_packaged_table_loads_once_and_names_the_component_behind_an_api() -> None:
    table = components()
    assert table is components()
    assert {"gse", "file_source", "cmdb", "iam"} <= {c.id for c in table.components}
    gse = table.for_uri("/api/v2/task/extensions/async_transfer_file")
    assert gse is not None and gse.name == "GSE"
    cmdb = table.for_uri("/api/c/compapi/v2/cc/list_biz_hosts/")
    assert cmdb is not None and cmdb.id == "cmdb"
    assert table.for_uri("/api/v3/unknown") is None and table.for_uri(None) is None


def test_a_file_source_task_failed_without_its_error_is_a_gap_with_what_to_collect() -> None:
    table = components()
    records = file_run("")
    [gap] = table.unexplained(records, decisive=[records[3]])
    assert gap.component.id == "file_source"
    assert gap.failures == (records[2], records[3])
    assert gap.values == {
        "file_task_id": TASK,
        "batch_task_id": BATCH,
        "worker_ip": "10.16.40.23",
        "file_source": "cos-release",
    }
    collect = gap.collect(table.texts)
    assert any("job-file-worker" in c and TASK in c and "10.16.40.23" in c for c in collect)
    assert any("job-file-gateway" in c and BATCH in c for c in collect)


def test_a_file_source_task_that_said_why_is_no_gap() -> None:
    records = file_run("Access Denied. (Status Code: 403; Error Code: AccessDenied)")
    assert components().unexplained(records, decisive=[records[3]]) == []
    # nor is a failure that did not decide the outcome
    assert components().unexplained(file_run(""), decisive=[]) == []


def test_an_unexplained_id_reads_as_not_in_the_logs() -> None:
    table = components()
    records = chain(("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"))
    [gap] = table.unexplained(records, decisive=records)
    assert gap.values == {}
    assert table.texts.unknown_id in gap.collect(table.texts)[0]


CMDB_FAIL = (
    "Fail to request CMDB data|method=POST|uri=/api/c/compapi/v2/cc/list_biz_hosts/|queryParams=null|"
    'body={"bk_biz_id":100092,"page":{"start":0,"limit":500}}'
)


@pytest.mark.parametrize(
    ("stack", "gap"),
    [
        ("com.tencent.bk.job.common.exception.InternalCmdbException: null\n\tat a.B.c(B.java:1)", True),
        (
            "org.apache.http.conn.HttpHostConnectException: Connect to paas.service.consul:80 failed: "
            "Connection refused (Connection refused)\n\tat a.B.c(B.java:1)",
            False,
        ),
    ],
)
def test_a_cmdb_failure_is_a_gap_only_without_its_reason(stack: str, gap: bool) -> None:
    table = components()
    records = chain(("WARN", CMDB_FAIL, stack))
    gaps = table.unexplained(records, decisive=records)
    assert [g.component.id for g in gaps] == (["cmdb"] if gap else [])
    if gap:
        assert gaps[0].values == {"uri": "/api/c/compapi/v2/cc/list_biz_hosts/", "biz_id": "100092"}


@pytest.mark.parametrize(
    ("auth", "gap"),
    [
        ("AuthResult(pass=false, applyUrl=null, requiredActionResources=[])", True),
        (
            "AuthResult(pass=false, applyUrl=null, requiredActionResources=[PermissionActionResource("
            "actionId=quick_execute_script, resourceGroups=[])])",
            False,
        ),
    ],
)
def test_a_permission_denial_is_a_gap_only_when_the_action_is_not_logged(auth: str, gap: bool) -> None:
    records = chain(
        (
            "INFO",
            f"Handle PermissionDeniedException, uri: /esb/api/v3/fast_execute_script, authResult: {auth}",
        )
    )
    gaps = components().unexplained(records, decisive=records)
    assert [g.component.id for g in gaps] == (["iam"] if gap else [])


def _parse(text: str) -> None:
    parse_components(tomllib.loads(text), "components.toml")


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ("(?P<reason>[^\\n]*)'", "[^\\n]*'", "no named group 'reason'"),
        ("按文件源任务 ID {file_task_id}", "按文件源任务 ID {task}", "unknown placeholder(s) ['task']"),
        ('id = "cmdb"', 'id = "iam"', "duplicate component id(s) ['iam']"),
        ("'Handle PermissionDeniedException',", "'Hand',", "component 'iam' (entry #4)"),
        ("unsettled_confidence = 0.45", "unsettled_confidence = 1.5", "unsettled_confidence"),
    ],
)
def test_a_broken_entry_is_named(old: str, new: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(ComponentsError) as err:
        _parse(GOOD.replace(old, new, 1))
    assert hint in str(err.value)


def test_an_unreadable_file_is_one_error(tmp_path: Path) -> None:
    broken = tmp_path / "components.toml"
    broken.write_text("[texts\n", encoding="utf-8")
    with pytest.raises(ComponentsError, match="cannot read component table"):
        load_components(broken)

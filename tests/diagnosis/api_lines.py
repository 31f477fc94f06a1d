"""API client lines (bk-job.md §1.4, `BaseBkApiClient`) for the lesson tests: one GSE dispatch
answered with `success=true`, and the engine error that follows it."""

from __future__ import annotations

from tests.diagnosis.signatures.chains import G, J, S

TRANSFER = "/api/v2/task/extensions/async_transfer_file"
EVENT = f"GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}, jobInstanceId={J}, stepInstanceId={S}, executeCount=0, batch=0]"
NPE = (
    'java.lang.NullPointerException: Cannot invoke "com.tencent.bk.job.common.gse.v2.model.AsyncGseTaskResult'
    '.getResult()" because "asyncGseTaskResult" is null\n'
    "\tat com.tencent.bk.job.common.gse.v2.GseV2ApiClient.buildGseTaskResponse(GseV2ApiClient.java:136)"
)


def response(resp: str, *, success: str = "true", uri: str = TRANSFER, request_id: str = "e1b7c0d4") -> str:
    return (
        f"[BaseBkApiClient] Response|tenantId=default|bkApiRequestId={request_id}|method=POST|uri={uri}"
        f"|success={success}|costTime=26|resp={resp}"
    )


AUTH_FAILED = (
    '{"result":true,"code":1640001,"message":"bk_app_code or bk_app_secret is incorrect","data":null}'
)
GOOD = '{"result":true,"code":0,"message":"success","data":{"result":{"task_id":"GSETASK:20250916214003:1"}}}'

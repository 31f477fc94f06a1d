from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

APP_CODE = "job-doctor"
APP_SECRET = "s3cr3t-app-secret-value"
USERNAME = "admin"
CREDS = (APP_CODE, APP_SECRET, USERNAME)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s

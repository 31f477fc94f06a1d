"""HTTP clients for the BlueKing APIs the bot reads: BkLog, BK-JOB and GSE (all via the API gateway)."""

from bot.clients.gateway import (
    ApiCredentials,
    ApiError,
    GatewayAuthError,
    GatewayError,
    GatewayRateLimited,
    UpstreamError,
)

__all__ = [
    "ApiCredentials",
    "ApiError",
    "GatewayAuthError",
    "GatewayError",
    "GatewayRateLimited",
    "UpstreamError",
]

"""WeCom (企业微信) channels: AI bot (智能机器人) callbacks and the shared WXBizMsgCrypt crypto.

The group robot webhook (send-only) lives in `bot.channels.webhook`.
"""

from __future__ import annotations

import aiohttp

from bot.channels.base import Endpoint, Ingress
from bot.channels.wecom.aibot import AibotChannel, AibotOptions, Relay
from bot.channels.wecom.crypto import WeComCrypto, WeComCryptoError
from bot.channels.wecom.http_mode import AibotHttpHandler
from bot.channels.wecom.ws_mode import AibotWsClient
from bot.core.settings import ConfigError, WecomAibotSettings
from bot.core.store import Store


def build_wecom_aibot(
    cfg: WecomAibotSettings,
    *,
    store: Store,
    http: aiohttp.ClientSession,
    ingress: Ingress,
    options: AibotOptions | None = None,
) -> tuple[AibotChannel, list[Endpoint]]:
    """The AI bot channel (shared by both modes) and the endpoints of the modes that are on."""
    options = options or AibotOptions()
    relay = Relay(store, cfg.bot_id, ttl_s=options.state_ttl_s) if cfg.ws_enabled else None
    channel = AibotChannel(store, http, options, relay=relay)
    endpoints: list[Endpoint] = []
    if cfg.http_enabled and cfg.token is not None and cfg.encoding_aes_key is not None:
        try:
            crypto = WeComCrypto(cfg.token.get_secret_value(), cfg.encoding_aes_key.get_secret_value())
        except WeComCryptoError as exc:
            raise ConfigError(f"invalid setting JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY: {exc}") from None
        endpoints.append(AibotHttpHandler(crypto, channel, ingress))
    if relay is not None and cfg.secret is not None:
        endpoints.append(
            AibotWsClient(
                session=http,
                store=store,
                channel=channel,
                relay=relay,
                ingress=ingress,
                bot_id=cfg.bot_id,
                secret=cfg.secret.get_secret_value(),
                url=cfg.ws_url,
            )
        )
    return channel, endpoints

"""WeCom (企业微信) channels: AI bot (智能机器人) callbacks and the shared WXBizMsgCrypt crypto.

The group robot webhook (send-only) lives in `bot.channels.webhook`.
"""

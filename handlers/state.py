"""Conversation state kept between messages: the question the bot asked a sender."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# How long what one message did is remembered (its policy decision, its ask, its answer, the
# analysis it started): longer than it can be handled again (claim timeout x attempts), short
# enough that a flood of messages leaves no lasting keys.
TURN_MEMORY_S = 3600


class Ask(BaseModel):
    """The bot asked this sender for something and waits (with a TTL) for the answer."""

    model_config = ConfigDict(extra="ignore")

    reason: Literal["need_id", "which_step"]
    text: str = ""  # need_id: the message that asked about a failure (first 200 chars)
    task: int | None = None  # which_step: the job instance whose step we asked for
    at: float = 0.0  # when it was asked (epoch seconds)

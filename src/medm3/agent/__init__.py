"""The expert-calling agent: prompts in, triggers detected, experts run, answers out."""

from __future__ import annotations

from medm3.agent.session import AgentConfig, AgentReply, ChatSession
from medm3.agent.trace import Trace
from medm3.agent.triggers import Trigger, TriggerParse, parse_trigger

__all__ = [
    "AgentConfig",
    "AgentReply",
    "ChatSession",
    "Trace",
    "Trigger",
    "TriggerParse",
    "parse_trigger",
]

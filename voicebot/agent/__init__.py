"""Reasoning modes, tools, call control, DTMF collection and per-caller memory.

A route's tools are declared once as neutral :class:`s2s.tools.ToolSpec` s (each provider maps
them to its wire format); :class:`voicebot.agent.registry.CallTools` is one call's set and the
bridge's tool handler and DTMF hook. This package imports nothing at package level so that
``voicebot.config`` can import its config models without a cycle.
"""

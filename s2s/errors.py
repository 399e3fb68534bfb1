"""The one base of every error voicebot raises on purpose, so an embedding application can
catch "anything voicebot refused or could not do" with one ``except``. It lives at the
bottom of the stack so every layer can derive from it. Each error also keeps the builtin
base it always had (``ValueError``, ``RuntimeError``, ...), so existing handlers still match."""

from __future__ import annotations


class VoicebotError(Exception):
    pass

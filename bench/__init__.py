"""Benchmarks that print figures (``python -m bench [name ...]``); speed goals live here, not in tests."""

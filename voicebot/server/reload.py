"""Hot reload of the config file, on SIGHUP and when the file changes.

A new file is loaded and fully validated first (the same loader as start-up, so ``${VAR}``
references are resolved against the environment *now*). Valid: it is applied to new calls
(``Runtime.apply``); calls in progress keep the route, providers and settings their
``CallPlan`` captured when they were answered. Invalid: every error is logged and the
running config stays. The file is watched by polling its mtime/size/inode every
``poll_s`` (no extra dependency; a rename-into-place by an editor or a ConfigMap update is
seen as a change too); SIGHUP reloads at once even if the file looks unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import uvicorn

from voicebot.config import AppConfig, ConfigError, load_config

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ConfigReloader:
    def __init__(
        self,
        path: str | Path,
        apply: Callable[[AppConfig], None],
        *,
        poll_s: float = 2.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.apply = apply
        self.poll_s = poll_s
        self.env = env
        self.reloads = 0
        self.rejected = 0
        self._stamp = _stamp(self.path)
        self._wake: asyncio.Event | None = None

    def reload(self, why: str) -> bool:
        """Load, validate and apply the file now; False (old config kept) if it is invalid."""
        try:
            config = load_config(self.path, self.env)
        except ConfigError as exc:
            self.rejected += 1
            log.error("config reload (%s) rejected; the running config stays in force.\n%s", why, exc)
            return False
        try:
            self.apply(config)
        except Exception:
            self.rejected += 1
            log.exception("config reload (%s): applying %s failed; the running config stays in force", why, self.path)
            return False
        self.reloads += 1
        routes = ", ".join(f"{r.name} -> {'/'.join(r.providers)}" for r in config.routes)
        log.warning("config reloaded from %s (%s): new calls use routes %s", self.path, why, routes)
        return True

    def request(self) -> None:
        """Reload soon (the SIGHUP handler); call on the watcher's loop
        (``loop.call_soon_threadsafe`` from another thread)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, handle_sighup: bool = True) -> None:
        """Watch until cancelled. SIGHUP is handled only where the loop can own signals
        (the main thread); elsewhere (tests, embedding) use :meth:`request`."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        sighup = False
        if handle_sighup and hasattr(signal, "SIGHUP"):
            try:
                loop.add_signal_handler(signal.SIGHUP, self.request)
                sighup = True
            except (RuntimeError, ValueError, NotImplementedError) as exc:
                log.debug("config reload: SIGHUP not handled here: %r", exc)
        log.info("watching %s for changes%s", self.path, " and SIGHUP" if sighup else "")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
                requested = self._wake.is_set()
                self._wake.clear()
                stamp = _stamp(self.path)
                if requested or stamp != self._stamp:
                    self._stamp = stamp
                    if stamp is None:
                        log.error("config reload: %s is gone; the running config stays in force", self.path)
                        continue
                    self.reload("SIGHUP" if requested else "file changed")
        finally:
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)


async def serve_with_reload(server: uvicorn.Server, reloader: ConfigReloader) -> None:
    watcher = asyncio.ensure_future(reloader.run())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def run_server_with_reload(server: uvicorn.Server, reloader: ConfigReloader) -> None:
    """``server.run()`` with the config watcher on the same event loop."""
    asyncio.run(serve_with_reload(server, reloader), loop_factory=server.config.get_loop_factory())

"""Running the app under uvicorn with the settings a phone server needs."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

# The transport-level cap on one WebSocket frame. The Media Streams protocol enforces its own
# smaller limit per frame (server.max_message_bytes) and drops offenders with a log line; this
# cap only stops a peer from making uvicorn buffer megabytes first.
WS_MAX_FRAME_BYTES = 1024 * 1024


def uvicorn_config(app: Starlette, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_FRAME_BYTES,
        # Twilio does not compress; deflate would only cost CPU per frame.
        ws_per_message_deflate=False,
        log_config=None,
        log_level=log_level,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="*",
    )

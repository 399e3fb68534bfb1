"""The process shell: the ASGI app (app), running it under uvicorn (run), graceful drain,
config hot reload, health endpoints and logging. Nothing here knows about one call's audio."""

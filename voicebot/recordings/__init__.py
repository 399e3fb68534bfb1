"""Recordings that outlive the pod: finished call tapes uploaded to a bucket
(``[recording] store = "s3"``); :mod:`voicebot.recordings.upload` moves them,
:mod:`voicebot.recordings.s3` is the store."""

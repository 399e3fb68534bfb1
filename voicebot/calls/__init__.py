"""Call setup: from a Twilio webhook to a planned call (runtime), a provider slot per call
(admission, admission_redis) and the signed token that lets any instance take the media stream
(stream_token)."""

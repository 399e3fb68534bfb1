"""Personal data: what a call's words may leave behind (redaction) and for how long (retention)."""

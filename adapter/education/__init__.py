"""Health education: topics patients subscribe to, their per-topic consent and the planned series."""

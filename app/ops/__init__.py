"""Operations: telemetry (request ids, Server-Timing, access logs), Prometheus metrics, logs, process tuning (tuning.py)."""

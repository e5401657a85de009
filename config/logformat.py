"""The JSON log line's format, shared by the app (app/logs.py) and gunicorn's own logger
(config/gunicorn.conf.py). It lives here, not in app/, so that gunicorn's master process can
use it without importing the application (numpy, onnxruntime...): on the 512 MB tier that
import cost the master 33 MB."""

# Keyword arguments of pythonjsonlogger.json.JsonFormatter: Cloud Logging reads `severity`.
JSON_FORMATTER_KWARGS = {
    "fmt": "%(levelname)s %(message)s %(name)s %(asctime)s",
    "rename_fields": {"levelname": "severity", "asctime": "time", "name": "logger"},
    "datefmt": "%Y-%m-%dT%H:%M:%S%z",
}

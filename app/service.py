# TEMPORARY shim during the reshaping (removed before commit): see app.pipeline.runtime and app.web.
from app.pipeline.runtime import Activity, Runtime as Service, build_runtime as build_service  # noqa: F401
from app.web import EXTENSION_KEY, current_runtime as get_service  # noqa: F401

"""The HTTP edge: blueprints, forms and uploads, errors as JSON, auth and protection, OpenAPI."""

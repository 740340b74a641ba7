"""The v1 Pod: pydantic models, the field catalogue, named checks, quantities."""

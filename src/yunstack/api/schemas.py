"""Base for strict wire models: unknown fields are refused (nova additionalProperties: false)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, str_max_length=65535)

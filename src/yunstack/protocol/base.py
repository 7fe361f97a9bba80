"""The base of every wire model: frozen, strict about unknown fields, JSON-serialisable with pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Wire(BaseModel):
    """A value that crosses the agent <-> control plane boundary (in process today, HTTP tomorrow)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

"""The base of every model a plan file is read into: strict pydantic.

Unknown keys are errors, values are not coerced, nothing mutates. Operations, traffic
backends and the plan itself build on it; it imports nothing of migrator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Every plan model: unknown keys are errors, values are not coerced, nothing mutates."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

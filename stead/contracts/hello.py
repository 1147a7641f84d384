"""Contracts of the hello workflow (foundation smoke test)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GreetingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str
    worker: str

"""Contracts of the hello workflow (foundation smoke test)."""

from __future__ import annotations

from pydantic import Field

from stead.contracts.base import Closed


class GreetingRequest(Closed):
    name: str = Field(min_length=1, max_length=200)


class Greeting(Closed):
    message: str
    worker: str

"""Pydantic models for everything that crosses a Temporal boundary."""

"""What a check returns, and what the registry knows of a check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from hpc_tune.collector.checks.context import Context
from hpc_tune.collector.model import Model

__all__ = ["Check", "Finding"]


def _code_is_written(schema: dict[str, Any]) -> None:
    """A subclass's ``code`` has a default (its own code), yet every finding in summary.json carries it."""
    required = schema.setdefault("required", [])
    if "code" not in required:
        required.insert(0, "code")


class Finding(Model):
    """A warning a person should read before trusting the winner: what looks wrong, what to do about it,
    and the numbers behind it. Each check subclasses it with its ``code`` and the model of its ``details``."""

    model_config = ConfigDict(json_schema_extra=_code_is_written)

    code: str = Field(description="Which check found it (a module of hpc_tune/collector/checks/).")
    message: str = Field(description="What looks wrong, with the numbers that show it.")
    action: str = Field(description="What to change for the next study.")
    details: BaseModel = Field(description="The numbers behind the message, for a program to read.")


F = TypeVar("F", bound=Finding)


@dataclass(frozen=True)
class Check(Generic[F]):
    """One check: the finding it makes and how it looks for it. ``on_confirmation``: it applies to a
    ``rerun-top`` study too (chosen configurations, not a search: only checks of the runs themselves do)."""

    finding: type[F]
    run: Callable[[Context], F | None]
    on_confirmation: bool = False

    @property
    def code(self) -> str:
        return str(self.finding.model_fields["code"].default)

"""How an incremental finds what changed at the source: the watermark, or row hashes by key range;
and what it does with rows the source no longer has."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The cache column that holds the source's hash of each row, for `change_detection: hash`.
HASH_COLUMN = "_sync_hash"


class ChangeDetection(StrEnum):
    TIMESTAMP = "timestamp"  # rows whose `updated_at` is past the watermark (minus the lookback)
    HASH = "hash"  # rows whose hash differs from the one the cache stored, found by key range


class Deletes(BaseModel):
    """Rows gone from the source since the last sync: deleted from the cache, or stamped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["hard", "soft"] = Field(description="hard: delete the row; soft: stamp `column`")
    column: str | None = Field(
        default=None, pattern=IDENTIFIER, description="soft: the cache column stamped with the deletion time"
    )
    max_delete_ratio: float = Field(
        default=0.10, gt=0, le=1, description="a sync deleting more of the cache table than this fails"
    )

    @model_validator(mode="after")
    def _column_for_soft(self) -> Deletes:
        if self.mode == "soft" and self.column is None:
            msg = "soft deletes need `column`: the cache column that records when a row was deleted"
            raise ValueError(msg)
        if self.mode == "hard" and self.column is not None:
            msg = "`column` applies to soft deletes; hard deletes remove the row"
            raise ValueError(msg)
        return self

    @property
    def soft_column(self) -> str | None:
        return self.column if self.mode == "soft" else None

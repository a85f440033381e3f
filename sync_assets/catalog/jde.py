"""The `jde:` options of a catalog table: JD Edwards storage conventions turned into plain types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

# JDE's data dictionary allows at most 31 digits for a math numeric (DB2's DECIMAL limit).
JDE_MAX_DIGITS = 31

SourceName = Annotated[str, Field(min_length=1)]
# A new cache column; the same rule as `models.Identifier` (models.py imports this module).
CacheName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]


class JdeOptions(BaseModel):
    """Which source columns hold Julian dates, HHMMSS times, implied decimals or padded text.

    Column names are source names (before `columns` renames); `times` adds new cache columns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    julian_dates: list[SourceName] = Field(
        default_factory=list, description="CYYDDD integers (0 = no date) read as DATE"
    )
    times: dict[CacheName, list[SourceName]] = Field(
        default_factory=dict,
        description="new cache column -> [Julian date column, HHMMSS time column], read as TIMESTAMP",
    )
    implied_decimals: dict[SourceName, Annotated[int, Field(ge=0, le=JDE_MAX_DIGITS - 1)]] = Field(
        default_factory=dict, description="integer column -> display decimals (data dictionary), exact"
    )
    trim: bool | list[SourceName] = Field(
        default=False, description="strip trailing spaces of every string column, or of these"
    )

    @model_validator(mode="after")
    def _one_meaning_per_column(self) -> JdeOptions:
        julian = set(self.julian_dates)
        if len(julian) != len(self.julian_dates):
            msg = "`julian_dates` names a column twice"
            raise ValueError(msg)
        if both := sorted(julian & set(self.implied_decimals)):
            msg = f"column '{both[0]}' cannot be both a Julian date and an implied decimal"
            raise ValueError(msg)
        for name, pair in self.times.items():
            if len(pair) != 2:
                msg = f"`times.{name}` needs both source columns: [Julian date column, HHMMSS time column]"
                raise ValueError(msg)
        times = {t for _, t in self.times.values()}
        for name, (day, time) in self.times.items():
            if day == time:
                msg = f"`times.{name}` needs two different columns: a Julian date and an HHMMSS time"
                raise ValueError(msg)
            if day in self.implied_decimals or time in self.implied_decimals:
                msg = f"`times.{name}`: its columns cannot be implied decimals"
                raise ValueError(msg)
            if time in julian:
                msg = f"`times.{name}`: time column '{time}' is listed in `julian_dates`"
                raise ValueError(msg)
        trimmed = set(self.trim) if isinstance(self.trim, list) else set()
        if both := sorted(trimmed & (julian | set(self.implied_decimals) | times)):
            msg = f"column '{both[0]}' is numeric in JDE; it cannot also be trimmed"
            raise ValueError(msg)
        return self

    @property
    def is_empty(self) -> bool:
        return not (self.julian_dates or self.times or self.implied_decimals or self.trim)

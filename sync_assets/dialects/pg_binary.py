"""Polars batches as PostgreSQL binary COPY, encoded from Arrow in Rust (pgpq), no Python per row.

Binary COPY takes no conversion on the server: every column's payload must be exactly the
target column's type (an int4 sent for an int8 column is `insufficient data left in message`).
So each batch column is cast to the Arrow type whose encoding is the target column's, and a
batch with a column that has no such twin (a uuid, a numeric carried as text, an array) is not
encoded here at all: `encoder_for` says None and the caller sends CSV instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pgpq
import polars as pl
import pyarrow as pa
import sqlalchemy as sa

# Arrow's widest decimal that pgpq encodes as numeric.
MAX_DECIMAL_PRECISION = 38


@dataclass(frozen=True)
class BinaryBatches:
    """The Arrow schema a table's batches are cast to, and its encoder."""

    schema: pa.Schema
    encoder: pgpq.ArrowToPostgresBinaryEncoder

    def encode(self, frame: pl.DataFrame) -> Iterable[bytes]:
        """One COPY's payload: header, the batch, trailer."""
        table = frame.to_arrow().cast(self.schema)
        yield self.encoder.write_header()
        for batch in table.to_batches():
            yield self.encoder.write_batch(batch)
        yield self.encoder.finish()


def encoder_for(columns: Iterable[sa.Column[Any]], schema: pl.Schema) -> BinaryBatches | None:
    """The binary encoding of batches with `schema` into these columns; None where one column has
    no exact binary twin."""
    fields = []
    for column in columns:
        dtype = schema.get(column.name)
        arrow = None if dtype is None else arrow_type(column.type, dtype)
        if arrow is None:
            return None
        fields.append(pa.field(column.name, arrow))
    arrow_schema = pa.schema(fields)
    return BinaryBatches(arrow_schema, pgpq.ArrowToPostgresBinaryEncoder(arrow_schema))


def arrow_type(target: sa.types.TypeEngine[Any], dtype: pl.DataType) -> pa.DataType | None:
    """The Arrow type pgpq encodes as `target`'s binary format, for a batch column of `dtype`;
    None where there is none (or the batch would need a conversion a cast cannot do exactly)."""
    if isinstance(target, sa.Integer) and dtype.is_integer():
        if isinstance(target, sa.SmallInteger):
            return pa.int16()
        return pa.int64() if isinstance(target, sa.BigInteger) else pa.int32()
    if isinstance(target, sa.Float):
        if not dtype.is_float():
            return None
        single = isinstance(target, sa.REAL) or (
            not isinstance(target, sa.Double) and (target.precision or 53) <= 24
        )
        return pa.float32() if single else pa.float64()
    if isinstance(target, sa.Numeric):
        if isinstance(dtype, pl.Decimal) and (dtype.precision or 0) <= MAX_DECIMAL_PRECISION:
            return pa.decimal128(dtype.precision or MAX_DECIMAL_PRECISION, dtype.scale or 0)
        return None
    if isinstance(target, sa.Uuid):
        return None  # text in the batch; uuid's binary form is 16 bytes
    if isinstance(target, sa.String) and dtype == pl.String:
        return pa.large_string()
    if isinstance(target, sa.Boolean) and dtype == pl.Boolean:
        return pa.bool_()
    if isinstance(target, sa.DateTime) and isinstance(dtype, pl.Datetime):
        # Microseconds: what PostgreSQL keeps; finer values were cut before (cache_value_fixes).
        zoned = bool(getattr(target, "timezone", False))
        if zoned != (dtype.time_zone is not None):
            return None
        return pa.timestamp("us", tz="UTC" if zoned else None)
    if isinstance(target, sa.Date) and dtype == pl.Date:
        return pa.date32()
    if isinstance(target, sa.Time) and dtype == pl.Time and not getattr(target, "timezone", False):
        return pa.time64("us")
    if isinstance(target, sa.LargeBinary) and dtype == pl.Binary:
        return pa.large_binary()
    return None

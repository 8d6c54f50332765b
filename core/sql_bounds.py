"""Values clients send, bounded to what SQL columns store: integers and instants.

Our columns are SQL INTEGER: 64 bits in SQLite but 32 in PostgreSQL, so the bound is the
smaller, -2**31 .. 2**31 - 1. A larger Python int reached the driver and failed there
(sqlite3's OverflowError beyond 64 bits, asyncpg's "out of int32 range"), which answered 500.
Every integer field of a request schema is one of these types, so pydantic refuses the number
with the error type `number_out_of_range` and the field it was in, and the OpenAPI document
states the bounds (`tests/unit/test_request_bounds.py` checks that no integer is left unbounded).

Instants are stored in UTC (core.db), which needs a zone to convert from and a result within
Python's years 1 to 9999: 9999-12-31T23:59:59-14:00 is in year 10000 in UTC and raised
OverflowError while binding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

SQL_INT_MIN = -(2**31)
SQL_INT_MAX = 2**31 - 1
# The error type (and the API's error code) for an integer beyond those bounds.
OUT_OF_RANGE = "number_out_of_range"
# pydantic's own type for an integer string too long to parse (over 4,300 digits): out of range
# as well, so the API answers it with the same code.
PYDANTIC_INT_TOO_LONG = "int_parsing_size"


def fits_sql_integer(value: int) -> bool:
    return SQL_INT_MIN <= value <= SQL_INT_MAX


def _check(value: int) -> int:
    if not fits_sql_integer(value):
        raise PydanticCustomError(
            OUT_OF_RANGE,
            "the number is beyond a signed 64-bit integer ({min} to {max})",
            {"min": SQL_INT_MIN, "max": SQL_INT_MAX},
        )
    return value


class _FitsSqlInteger:
    """Annotated metadata: validates after int (and the field's own ge/le) and documents the
    64-bit bounds where the field states none of its own."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("minimum", SQL_INT_MIN)
        json_schema.setdefault("maximum", SQL_INT_MAX)
        return json_schema


# Any integer a column stores. A field may narrow it further: `SqlInt = Field(0, ge=0, le=10)`.
SqlInt = Annotated[int, _FitsSqlInteger()]
# A row id: 1 and up.
Id = Annotated[int, Field(ge=1), _FitsSqlInteger()]
# A count or an offset: 0 and up.
Count = Annotated[int, Field(ge=0), _FitsSqlInteger()]


def _convertible_to_utc(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", "the instant is outside the years 1 to 9999 in UTC"
        ) from None
    return value  # as given: the answer echoes the client's own zone


# An instant with a zone (a naive one is refused: the columns are UTC), convertible to UTC.
UtcInstant = Annotated[AwareDatetime, AfterValidator(_convertible_to_utc)]

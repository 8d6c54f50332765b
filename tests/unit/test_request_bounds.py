"""What a client sends is refused with a 4xx before it reaches SQL: every integer a request
may carry is bounded to a signed 64-bit column, and bodies are UTF-8 JSON objects of bounded
depth whose strings a database can store."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from api.app import ROUTE_TABLES
from api.errors import (
    BodyInvalid,
    BodyTooDeep,
    NumberOutOfRange,
    RequestInvalid,
    TextInvalid,
    validation_failed,
)
from api.openapi import openapi_document
from api.routing import MAX_BODY_DEPTH, json_object, sql_integer
from core.sql_bounds import SQL_INT_MAX, SQL_INT_MIN, Count, Id, SqlInt, UtcInstant


def request_integers(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every integer schema a request may carry (path, query, body), with where it is."""
    components = document["components"]["schemas"]
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, where: str, seen: frozenset[str]) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, where, seen)
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                walk(components[name], f"{where} -> {name}", seen | {name})
            return
        types = node.get("type")
        if types == "integer" or (isinstance(types, list) and "integer" in types):
            found.append((where, node))
        for key, value in node.items():
            walk(value, f"{where}.{key}" if key == "properties" else where, seen)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                walk(parameter["schema"], f"{where} {parameter['name']}", frozenset())
            body = operation.get("requestBody", {}).get("content", {})
            for media in body.values():
                walk(media.get("schema"), f"{where} body", frozenset())
    return found


def test_every_integer_a_request_carries_fits_a_sql_integer_column() -> None:
    routes = [route for table in ROUTE_TABLES for route in table.routes]
    integers = request_integers(openapi_document(routes, extra_paths={}))
    assert len(integers) > 20  # the walk found the schemas (ids, counts, limits)
    unbounded = [
        where
        for where, schema in integers
        if not SQL_INT_MIN <= schema.get("minimum", SQL_INT_MIN - 1) <= SQL_INT_MAX
        or not SQL_INT_MIN <= schema.get("maximum", SQL_INT_MAX + 1) <= SQL_INT_MAX
    ]
    # A plain `int` field lets 2**64 through to the driver (a 500): use core.sql_bounds.
    assert not unbounded, "\n".join(unbounded)


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Id
    members: list[SqlInt] = []
    offset: Count = 0


def refusal(data: dict[str, Any]) -> RequestInvalid:
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(data)
    return validation_failed(caught.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"id": 2**63}, "id"),
        ({"id": 1, "members": [1, -(2**63) - 1]}, "members.1"),
        ({"id": 1, "offset": 2**64}, "offset"),
        ({"id": "9" * 25}, "id"),  # a query parameter arrives as text
        ({"id": "9" * 5000}, "id"),  # longer than pydantic parses: out of range all the same
        ({"id": 1e30}, "id"),
    ],
)
def test_an_integer_beyond_64_bits_is_number_out_of_range_naming_the_field(
    data: dict[str, Any], field: str
) -> None:
    error = refusal(data)
    assert isinstance(error, NumberOutOfRange)
    assert (error.code, error.field) == ("number_out_of_range", field)
    assert error.details["errors"][0]["code"] == "number_out_of_range"


def test_the_bounds_themselves_are_accepted_and_other_errors_keep_their_code() -> None:
    assert Sample.model_validate({"id": SQL_INT_MAX, "members": [SQL_INT_MIN]}).id == SQL_INT_MAX
    error = refusal({"id": 0})
    assert (error.code, error.field) == ("validation_error", "id")


@pytest.mark.parametrize(
    ("digits", "value"),
    [("1", 1), ("0007", 7), (str(SQL_INT_MAX), SQL_INT_MAX), ("0" * 30 + "5", 5)],
)
def test_path_ids_within_the_sql_integer_are_read(digits: str, value: int) -> None:
    assert sql_integer(digits, "user_id") == value


@pytest.mark.parametrize("digits", [str(SQL_INT_MAX + 1), "9" * 20, "1" * 5000])
def test_path_ids_beyond_64_bits_are_number_out_of_range(digits: str) -> None:
    with pytest.raises(NumberOutOfRange) as caught:
        sql_integer(digits, "user_id")
    assert caught.value.field == "user_id"


def nested(depth: int) -> bytes:
    """An object `depth` levels deep: {"a": {"a": ... {} }}."""
    return ('{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)).encode()


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"name": "caf\xe9"}', BodyInvalid),  # Latin-1, not UTF-8
        (b"\xff\xfe{\x00}\x00", BodyInvalid),  # UTF-16
        (b"", BodyInvalid),
        (b"  ", BodyInvalid),
        (b"{", BodyInvalid),
        (b"[1, 2]", BodyInvalid),
        (b"null", BodyInvalid),
        (b'{"a": NaN}', BodyInvalid),
        (b'{"a": -Infinity}', BodyInvalid),
        (b'{"a": 1e400}', NumberOutOfRange),
        (b'{"a": ' + b"1" * 5000 + b"}", NumberOutOfRange),
        (nested(MAX_BODY_DEPTH + 1), BodyTooDeep),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", BodyTooDeep),
        (b'{"name": "\\ud800"}', TextInvalid),  # a lone surrogate: no UTF-8 encoding exists
        (b'{"\\udfff": 1}', TextInvalid),
        (b'{"name": "a\\u0000b"}', TextInvalid),  # PostgreSQL's text cannot hold NUL
    ],
)
def test_a_body_that_cannot_be_read_is_refused_with_its_reason(
    raw: bytes, kind: type[Exception]
) -> None:
    with pytest.raises(kind):
        json_object(raw)


def test_a_readable_body_is_the_object_it_says() -> None:
    text = {"name": "Zoë 😀", "n": [1, 2.5, None, True], "deep": json.loads(nested(3))}
    raw = json.dumps(text).encode()  # ASCII escapes, surrogate pairs included
    assert json_object(raw) == text
    assert json_object(nested(MAX_BODY_DEPTH)) == json.loads(nested(MAX_BODY_DEPTH))
    assert json_object(json.dumps(text, ensure_ascii=False).encode()) == text


def test_the_field_of_a_bad_string_or_a_too_deep_value_is_named() -> None:
    with pytest.raises(TextInvalid) as text:
        json_object(b'{"customer": {"names": ["ok", "\\ud83d"]}}')
    assert text.value.field == "customer.names.1"
    with pytest.raises(BodyTooDeep) as deep:
        json_object(nested(MAX_BODY_DEPTH + 1))
    assert deep.value.field == ".".join(["a"] * MAX_BODY_DEPTH)


class Window(BaseModel):
    since: UtcInstant


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("2026-12-04T10:00:00", "timezone_aware"),  # the columns are UTC: a zone is needed
        ("9999-12-31T23:59:59-14:00", "datetime_out_of_range"),  # year 10000 in UTC
        ("0001-01-01T00:00:00+14:00", "datetime_out_of_range"),  # year 0 in UTC
    ],
)
def test_an_instant_the_database_cannot_store_in_utc_is_refused(text: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Window.model_validate({"since": text})
    error = validation_failed(caught.value)
    assert (error.code, error.field) == ("validation_error", "since")
    assert error.details["errors"][0]["code"] == code


def test_an_instant_keeps_the_zone_it_was_given_in() -> None:
    since = Window.model_validate({"since": "9999-12-31T23:59:59+14:00"}).since
    assert since.utcoffset() == timedelta(hours=14)

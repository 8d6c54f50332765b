"""Generated requests from the OpenAPI document: every operation, with malformed bodies and
parameters, with and without a token. Whatever a client sends, the answer is no 5xx, and every
4xx carries the error shape. Deterministic (one seed) and bounded (a few thousand requests).

Nothing it sends may change the session's data: ids in paths name nothing (the largest id a
column holds), and a body goes to an operation without a path id only when it is malformed.
The requests are HTTP aiohttp can parse (no NUL, CR or LF in a header, RFC 9110 section 5.5;
no Content-Encoding it has no decoder for): the rest is answered 400 by aiohttp's parser,
before the application sees the request."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from core.settings import Settings
from core.sql_bounds import SQL_INT_MAX, SQL_INT_MIN
from tests.conftest import ADMIN_TOKEN
from tests.support.api_client import ApiClient

SEED = 20261204
# Requests in flight at once: enough to overlap the database threads, few enough for 2 cores.
CONCURRENCY = 8
# Field mutations per body (the others are left out at random, by the seed).
MUTATIONS_PER_BODY = 6
# An id no row has: the largest a column holds, so it binds and finds nothing.
NO_SUCH_ID = SQL_INT_MAX
HUGE_INTS = [SQL_INT_MAX + 1, 2**64, SQL_INT_MIN - 1, 10**30, int("9" * 400)]
# Beyond the 64-bit maximum: what a field bounded only by that maximum refuses as out of range.
HUGE_POSITIVE = [n for n in HUGE_INTS if n > SQL_INT_MAX]
# Strings for fields with a pattern (sample picks the first that matches).
PATTERN_CANDIDATES = ["1001", "+4930123456", "09:00", "2026-12-04", "*50", "1", "#", "x"]
# Bodies that are not a JSON object a schema could read, and why (the code they must get).
RAW_BODIES: list[tuple[bytes, str]] = [
    (b'{"name": "caf\xe9"}', "invalid_body"),  # Latin-1
    (b"\xff\xfe{\x00}\x00", "invalid_body"),  # UTF-16 with a BOM
    (b"\x80\x81\x82", "invalid_body"),
    (b"", "invalid_body"),
    (b"{", "invalid_body"),
    (b'{"a": 1,}', "invalid_body"),
    (b"[1, 2]", "invalid_body"),
    (b"null", "invalid_body"),
    (b'"text"', "invalid_body"),
    (b'{"a": NaN}', "invalid_body"),
    (b'{"a": Infinity}', "invalid_body"),
    (b'{"a": 1e400}', "number_out_of_range"),
    (b'{"a": ' + b"7" * 5000 + b"}", "number_out_of_range"),
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "body_too_deep"),
    (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "body_too_deep"),
    (b'{"a": ' + b'{"a": ' * 40 + b"{}" + b"}" * 40 + b"}", "body_too_deep"),
    (b'{"name": "\\ud800"}', "invalid_text"),
    (b'{"\\udc00": 1}', "invalid_text"),
    (b'{"name": "nul\\u0000"}', "invalid_text"),
]
# Path ids that are no id: beyond a column, or not digits at all (those are 404: no route).
BAD_PATH_IDS = [str(SQL_INT_MAX + 1), str(2**64), "9" * 40, "1" * 3000, "0", "abc", "-1", "%FF"]
BAD_QUERY_VALUES = [
    str(SQL_INT_MAX + 1),
    str(2**64),
    "-" + "9" * 30,
    "7" * 5000,
    "abc",
    "",
    "%00",
    "1.5",
    "2026-13-45",
    "true",
    "%FF%FE",
    "[1]",
]
DATETIME_EXTREMES = [
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    "9999-12-31T23:59:59+14:00",
    "2026-12-04",
    "1e20",
]
# Headers that describe the body wrongly: a charset nobody knows (aiohttp's text() raised
# LookupError on it), another media type, an encoding the bytes are not in. (An encoding
# aiohttp has no decoder for, br or zstd, is refused by its parser: a plain-text 400.)
BODY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"Content-Type", b"application/json; charset=klingon"),
    (b"Content-Type", b"text/plain; charset=latin-1"),
    (b"Content-Encoding", b"gzip"),
    (b"Content-Encoding", b"deflate"),
    (b"Content-Encoding", b"identity, bogus"),
]
WRONG_TYPES: dict[str, list[Any]] = {
    "integer": ["abc", [], {}, 1.5, "1e3"],
    "number": ["abc", [], {}],
    "string": [5, [], {}, True, 1.5],
    "boolean": ["maybe", 5, [], {}],
    "array": ["x", {}, 5],
    "object": ["x", [], 5],
}


@dataclass
class Case:
    """One request and what it must get beyond "no 5xx, the error shape for a 4xx"."""

    name: str
    method: str
    target: str  # path and query, percent-encoded
    body: bytes | None = None
    token: str | None = None
    # The error code the answer must carry (as its code or one of its `errors`).
    expect_code: str | None = None
    # Headers sent as these bytes, straight onto the socket (see send_raw).
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # A body not in its Content-Encoding fails to decode in aiohttp's parser when it arrives
    # with the headers (a plain-text 400 before the application), in the handler otherwise.
    parser_may_refuse: bool = False


class Schemas:
    """The document's components, for following $ref."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._components: dict[str, Any] = document["components"]["schemas"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self._components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def concrete(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The first branch of a union that is not null (Optional[...], a oneOf of kinds)."""
        schema = self.resolve(schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = [self.resolve(b) for b in schema[key]]
                real = [b for b in branches if b.get("type") != "null"]
                return self.concrete(real[0]) if real else branches[0]
        return schema

    def sample(self, schema: dict[str, Any], depth: int = 0) -> Any:
        """A plausible value: enough shape for mutations to reach each field."""
        schema = self.concrete(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            if depth > 4:
                return {}
            properties = schema.get("properties", {})
            return {name: self.sample(prop, depth + 1) for name, prop in properties.items()}
        if kind == "array":
            return [self.sample(schema.get("items", {}), depth + 1)] if depth <= 4 else []
        if kind == "integer":
            return min(schema.get("maximum", NO_SUCH_ID), NO_SUCH_ID)
        if kind == "number":
            return schema.get("maximum", 1.0)
        if kind == "boolean":
            return True
        if kind == "string":
            return self._string(schema)
        return None

    @staticmethod
    def _string(schema: dict[str, Any]) -> str:
        formats = {"date-time": "2026-12-04T10:00:00Z", "date": "2026-12-04",
                   "email": "fuzz@example.com", "uri": "http://127.0.0.1:9/reply"}  # fmt: skip
        if schema.get("format") in formats:
            return formats[schema["format"]]
        pattern = schema.get("pattern")
        if pattern is not None:
            # Extensions, numbers, times of day, keys, codes: the first the pattern takes.
            for candidate in PATTERN_CANDIDATES:
                if re.search(pattern, candidate):
                    return candidate
        return "x" * max(1, int(schema.get("minLength", 1)))

    def integers(
        self, value: Any, schema: dict[str, Any]
    ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        """Where in `value` (built by sample) the schema wants an integer, and its schema."""
        schema = self.concrete(schema)
        if isinstance(value, dict):
            for name, item in value.items():
                prop = schema.get("properties", {}).get(name, {})
                for where, found in self.integers(item, prop):
                    yield (name, *where), found
        elif isinstance(value, list):
            for index, item in enumerate(value):
                for where, found in self.integers(item, schema.get("items", {})):
                    yield (index, *where), found
        elif isinstance(value, int) and not isinstance(value, bool):
            yield (), schema


def replaced(value: Any, where: tuple[Any, ...], new: Any) -> Any:
    if not where:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = replaced(value[where[0]], where[1:], new)
    return copy


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def operation_cases(
    path: str, method: str, operation: dict[str, Any], schemas: Schemas, rng: random.Random
) -> Iterator[Case]:
    params = operation.get("parameters", [])
    path_names = [p["name"] for p in params if p["in"] == "path"]
    query_params = [p for p in params if p["in"] == "query"]
    secret_headers = [p["name"] for p in params if p["in"] == "header"]
    needs_token = bool(operation.get("security"))
    method = method.upper()

    def target(ids: dict[str, str] | None = None, query: dict[str, str] | None = None) -> str:
        filled = path
        for name in path_names:
            filled = filled.replace("{" + name + "}", (ids or {}).get(name, str(NO_SUCH_ID)))
        if query:
            # Values are sent as written: the malformed ones are percent-encoded already.
            filled += "?" + "&".join(f"{quote(k)}={v}" for k, v in query.items())
        return filled

    content = operation.get("requestBody", {}).get("content", {})
    json_schema = content.get("application/json", {}).get("schema")
    base_body: Any = schemas.sample(json_schema) if json_schema else None
    # With a path id the request names nothing, so even a valid body changes nothing.
    safe_base = base_body if (path_names or method == "GET") else None
    plain_body = encode(safe_base) if safe_base is not None else None
    if json_schema is None and content:
        plain_body = b"not audio"  # a binary upload: what sox cannot read

    tokens = [ADMIN_TOKEN, None] if needs_token else [None]
    for token in tokens:
        who = "admin" if token else "anonymous"
        # Past authentication, so the input itself is judged.
        judged = token is not None or not needs_token
        yield Case(f"{who} plain", method, target(), plain_body, token)
        for bad_id in BAD_PATH_IDS if path_names else []:
            name = rng.choice(path_names)
            beyond = bad_id.isdigit() and bad_id != "0"
            expect = "number_out_of_range" if judged and beyond else None
            yield Case(
                f"{who} path {name}={bad_id[:12]}",
                method,
                target({name: bad_id}),
                plain_body,
                token,
                expect_code=expect,
            )
        for query_param in query_params:
            name = query_param["name"]
            for value in BAD_QUERY_VALUES:
                query = {name: value}
                yield Case(
                    f"{who} query {name}={value[:12]}",
                    method,
                    target(query=query),
                    plain_body,
                    token,
                )
            schema = schemas.concrete(query_param["schema"])
            if schema.get("format") == "date-time":
                # Valid instants at the ends of what datetime holds, naive and in far zones.
                for instant in DATETIME_EXTREMES:
                    yield Case(
                        f"{who} query {name}={instant}",
                        method,
                        target(query={name: quote(instant)}),
                        plain_body,
                        token,
                    )
            if schema.get("type") == "integer":
                # Reads at the bounds: valid, so they reach SQL, which must take them.
                for bound in (
                    schema.get("maximum", SQL_INT_MAX),
                    schema.get("minimum", SQL_INT_MIN),
                ):
                    query = {name: str(bound)}
                    yield Case(
                        f"{who} query {name}={bound}",
                        method,
                        target(query=query),
                        plain_body,
                        token,
                    )
        if query_params:
            yield Case(
                f"{who} unknown query", method, target(query={"bogus": "1"}), plain_body, token
            )
        if json_schema is not None:
            for raw, code in RAW_BODIES:
                yield Case(
                    f"{who} raw body {raw[:16]!r}",
                    method,
                    target(),
                    raw,
                    token,
                    expect_code=code if judged else None,
                )
            # Path-less writes get a body no schema takes (an unknown field): nothing is created.
            described = plain_body or encode({"unexpected_field": 1})
            for header, header_value in BODY_HEADERS:
                yield Case(
                    f"{who} {header.decode()}: {header_value.decode()}",
                    method,
                    target(),
                    described,
                    token,
                    raw_headers=[(header, header_value)],
                    parser_may_refuse=header == b"Content-Encoding",
                )
            yield from body_mutations(
                who, method, target(), json_schema, base_body, token, judged, schemas, rng
            )
        for header in secret_headers:
            yield Case(
                f"{who} {header} not UTF-8",
                method,
                target(),
                plain_body,
                token,
                raw_headers=[(header.encode(), b"\xff\xfe\x80secret")],
            )
    if needs_token:
        yield Case(
            "token not UTF-8",
            method,
            target(),
            plain_body,
            raw_headers=[(b"Authorization", b"Bearer pbx_\xff\xfe\x80")],
            expect_code="unauthorized",
        )


def body_mutations(
    who: str,
    method: str,
    target: str,
    schema: dict[str, Any],
    base: Any,
    token: str | None,
    judged: bool,
    schemas: Schemas,
    rng: random.Random,
) -> Iterator[Case]:
    """Bodies with one thing wrong each (so none is applied): a huge or mistyped field, an
    unknown one, one required field left out; and every integer at once beyond 64 bits."""
    concrete = schemas.concrete(schema)
    if not isinstance(base, dict):
        return
    mutations: list[tuple[str, Any]] = []
    for name, prop in concrete.get("properties", {}).items():
        kind = schemas.concrete(prop).get("type", "object")
        mutations.append((f"{name} huge", replaced(base, (name,), rng.choice(HUGE_INTS))))
        wrong = rng.choice(WRONG_TYPES.get(kind, WRONG_TYPES["object"]))
        mutations.append((f"{name} as {type(wrong).__name__}", replaced(base, (name,), wrong)))
    for required in concrete.get("required", []):
        mutations.append((f"without {required}", {k: v for k, v in base.items() if k != required}))
    rng.shuffle(mutations)
    mutations = mutations[:MUTATIONS_PER_BODY]
    mutations.append(("unknown field", {**base, "unexpected_field": 1}))
    every_huge, only_64_bits = base, False
    for where, integer in schemas.integers(base, concrete):
        # A field with a maximum of its own (a rating's 5) refuses with that bound instead.
        unbounded = integer.get("maximum") == SQL_INT_MAX
        only_64_bits |= unbounded
        huge = rng.choice(HUGE_POSITIVE if unbounded else HUGE_INTS)
        every_huge = replaced(every_huge, where, huge)
    if every_huge is not base:
        expect = "number_out_of_range" if judged and only_64_bits else None
        yield Case(
            f"{who} every integer huge",
            method,
            target,
            encode(every_huge),
            token,
            expect_code=expect,
        )
    for label, body in mutations:
        yield Case(f"{who} body {label}", method, target, encode(body), token)


def all_cases(document: dict[str, Any]) -> list[Case]:
    rng = random.Random(SEED)
    schemas = Schemas(document)
    cases: list[Case] = []
    for path, operations in sorted(document["paths"].items()):
        for method, operation in sorted(operations.items()):
            for case in operation_cases(path, method, operation, schemas, rng):
                case.name = f"{method.upper()} {path}: {case.name}"
                cases.append(case)
    return cases


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str


async def send(http: aiohttp.ClientSession, port: int, case: Case) -> Answer:
    if case.raw_headers:
        return await send_raw(port, case)
    headers = {}
    if case.token is not None:
        headers["Authorization"] = f"Bearer {case.token}"
    if case.body is not None:
        headers["Content-Type"] = "application/json"
    url = URL(f"http://127.0.0.1:{port}{case.target}", encoded=True)
    async with http.request(case.method, url, data=case.body, headers=headers) as response:
        return Answer(response.status, await response.read(), response.content_type)


async def send_raw(port: int, case: Case) -> Answer:
    """Header bytes aiohttp's client would not send, and a request in one write (the server
    may answer and close before a second one, as it does for a body it cannot decode)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = case.body or b""
    head = (
        f"{case.method} {case.target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    if not any(name.lower() == b"content-type" for name, _ in case.raw_headers):
        head += b"Content-Type: application/json\r\n"
    if case.token is not None:
        head += f"Authorization: Bearer {case.token}\r\n".encode()
    for name, value in case.raw_headers:
        head += name + b": " + value + b"\r\n"
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    head_part, _, answer = reply.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    content_type = next(
        (
            line.split(":", 1)[1].split(";")[0].strip()
            for line in lines[1:]
            if line.lower().startswith("content-type:")
        ),
        "",
    )
    return Answer(int(lines[0].split(" ")[1]), answer, content_type)


def problems_with(case: Case, answer: Answer) -> str | None:
    if answer.status >= 500:
        return f"{answer.status}: {answer.body[:200]!r}"
    if answer.status < 400:
        return None
    if case.parser_may_refuse and answer.status == 400 and answer.content_type == "text/plain":
        return None
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{answer.status} without the error shape: {answer.body[:200]!r}"
    if not (isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        return f"{answer.status} with an incomplete error: {error}"
    if answer.content_type != "application/json":
        return f"{answer.status} error as {answer.content_type}"
    codes = {error["code"], *(detail.get("code") for detail in error.get("errors") or [])}
    if case.expect_code is not None and case.expect_code not in codes:
        return f"{answer.status} {error['code']}, expected {case.expect_code}: {error['message']}"
    return None


@pytest.mark.timeout(300)
async def test_no_generated_request_gets_a_5xx_and_every_4xx_has_the_error_shape(
    admin: ApiClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    document = (await admin.get("/openapi.json")).body
    cases = all_cases(document)
    operations = sum(len(methods) for methods in document["paths"].values())
    per_operation = Counter(case.name.split(": ", 1)[0] for case in cases)
    assert len(per_operation) == operations, per_operation  # every operation, most many ways
    gate = asyncio.Semaphore(CONCURRENCY)
    found: list[str] = []

    async def run(case: Case) -> None:
        async with gate:
            answer = await send(http, settings.api.port, case)
        problem = problems_with(case, answer)
        if problem is not None:
            found.append(f"{case.name}\n    {problem}")

    await asyncio.gather(*(run(case) for case in cases))
    assert not found, f"{len(found)} of {len(cases)} answers were wrong:\n" + "\n".join(
        sorted(found)[:40]
    )
    health = await admin.get("/health")
    assert health.status == 200 and health.body["status"] == "ok"

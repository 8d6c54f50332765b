"""The one destination shape, row by row: what parses to which type, what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from destinations.destination import (
    Destination,
    ExtensionDestination,
    HangupDestination,
    MenuDestination,
    NumberDestination,
    QueueDestination,
    VoicemailDestination,
)

destination: TypeAdapter[Destination] = TypeAdapter(Destination)


def test_a_queue_without_a_priority_has_priority_0() -> None:
    assert destination.validate_python({"type": "queue", "id": 3}) == QueueDestination(id=3)
    assert QueueDestination(id=3).priority == 0


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ({"type": "extension", "extension": "1027"}, ExtensionDestination(extension="1027")),
        ({"type": "extension", "extension": "7"}, ExtensionDestination(extension="7")),
        ({"type": "extension", "extension": "0012"}, ExtensionDestination(extension="0012")),
        ({"type": "queue", "id": 3, "priority": 0}, QueueDestination(id=3)),
        ({"type": "queue", "id": 3, "priority": 100}, QueueDestination(id=3, priority=100)),
        ({"type": "menu", "id": 1}, MenuDestination(id=1)),
        ({"type": "voicemail", "box": 12}, VoicemailDestination(box=12)),
        ({"type": "number", "number": "+4930123456"}, NumberDestination(number="+4930123456")),
        ({"type": "number", "number": "112"}, NumberDestination(number="112")),
        ({"type": "number", "number": "12"}, NumberDestination(number="12")),
        ({"type": "number", "number": "9" * 20}, NumberDestination(number="9" * 20)),
        ({"type": "hangup"}, HangupDestination()),
    ],
)
def test_each_shape_parses_to_its_type_and_dumps_back(
    data: dict[str, Any], parsed: Destination
) -> None:
    assert destination.validate_python(data) == parsed
    assert parsed.model_dump() == data


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({}, ()),
        ({"type": "fax"}, ()),
        ({"extension": "1027"}, ()),
        ({"type": "extension"}, ("extension", "extension")),
        ({"type": "extension", "extension": ""}, ("extension", "extension")),
        ({"type": "extension", "extension": "12345"}, ("extension", "extension")),
        ({"type": "extension", "extension": "12a"}, ("extension", "extension")),
        ({"type": "extension", "extension": "١٢"}, ("extension", "extension")),
        ({"type": "extension", "extension": 1027}, ("extension", "extension")),
        ({"type": "queue"}, ("queue", "id")),
        ({"type": "queue", "id": 0}, ("queue", "id")),
        ({"type": "queue", "id": 3, "priority": -1}, ("queue", "priority")),
        ({"type": "queue", "id": 3, "priority": 101}, ("queue", "priority")),
        ({"type": "queue", "id": 3, "priority": "high"}, ("queue", "priority")),
        ({"type": "menu", "id": -1}, ("menu", "id")),
        ({"type": "voicemail", "id": 1}, ("voicemail", "box")),
        ({"type": "number", "number": "1"}, ("number", "number")),
        ({"type": "number", "number": "+"}, ("number", "number")),
        ({"type": "number", "number": "9" * 21}, ("number", "number")),
        ({"type": "number", "number": "+49 30 123"}, ("number", "number")),
        ({"type": "number", "number": "++4930"}, ("number", "number")),
        ({"type": "number", "number": "4930+"}, ("number", "number")),
        ({"type": "hangup", "reason": "busy"}, ("hangup", "reason")),
        ({"type": "extension", "extension": "1027", "number": "+4930"}, ("extension", "number")),
    ],
)
def test_malformed_destinations_are_refused_at_the_wrong_field(
    data: dict[str, Any], location: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as refused:
        destination.validate_python(data)
    assert refused.value.errors()[0]["loc"] == location


def test_destinations_are_immutable_values() -> None:
    target = ExtensionDestination(extension="1027")
    with pytest.raises(ValidationError):
        target.extension = "1028"  # type: ignore[misc]
    assert hash(target) == hash(ExtensionDestination(extension="1027"))

"""services.api.body: the nesting limit holds exactly, whether or not the body is walked to check it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.api.body import MAX_DEPTH, json_object
from services.api.errors import RequestError


class Body:
    def __init__(self, value: Any) -> None:
        self.raw = json.dumps(value).encode()

    async def read(self) -> bytes:
        return self.raw


def nested(levels: int) -> dict[str, Any]:
    """An object whose deepest value sits at `levels` (the object itself is level 1)."""
    value: Any = 1
    for _ in range(levels - 1):
        value = {"a": value}
    assert isinstance(value, dict)
    return value


async def test_a_body_at_the_depth_limit_is_read() -> None:
    assert await json_object(Body(nested(MAX_DEPTH))) == nested(MAX_DEPTH)  # type: ignore[arg-type]


async def test_a_body_past_the_depth_limit_is_refused() -> None:
    with pytest.raises(RequestError, match="nested deeper"):
        await json_object(Body(nested(MAX_DEPTH + 1)))  # type: ignore[arg-type]


async def test_a_shallow_body_is_read_whatever_its_size() -> None:
    body = {"Tags": {f"k{n}": [{"v": n}] for n in range(200)}}
    assert await json_object(Body(body)) == body  # type: ignore[arg-type]

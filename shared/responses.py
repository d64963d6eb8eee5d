"""JSON answers written by orjson (several times faster than the standard library's encoder, which Starlette's
``JSONResponse`` uses), for the answers the shared parts build themselves: a creating POST's stored answer, problem
details. Routes that return a model are already written by pydantic's own serializer (FastAPI's default)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    """A ``JSONResponse`` whose content is written by orjson, or is JSON already (bytes)."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)

"""The baseline of the HTTP benchmark: a hello-world FastAPI app served the way the services are (uvicorn, no access
log), with a GET and a POST that parses and answers an application-shaped body. Whatever a service does beyond this
is its own cost; this is the ceiling of the framework on the machine at hand.

``python -m uvicorn bench.hello:app --no-access-log``
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

app = FastAPI(title="hello", docs_url=None, redoc_url=None, openapi_url=None)


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resident_id: uuid.UUID
    life_event: str = Field(min_length=1, max_length=100)
    answers: dict[str, Any] = Field(default_factory=dict)
    channel: Literal["web", "mobile", "kiosk", "phone", "visit"] = "web"


class ApplicationOut(ApplicationIn):
    id: uuid.UUID
    status: str
    submitted_at: dt.datetime


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.post("/v1/applications", status_code=201)
async def submit(body: ApplicationIn) -> ApplicationOut:
    return ApplicationOut(**body.model_dump(), id=uuid.uuid4(), status="received", submitted_at=dt.datetime.now(dt.UTC))

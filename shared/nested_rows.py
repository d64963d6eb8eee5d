"""The rows of a table that belong to one row of the query, nested in that query as a JSON array: one statement (one
round trip) for a record and its parts, instead of one per part. A page that shows an application with its cases,
notifications and timeline reads them all at once.

:func:`nested` is the SQL (a correlated scalar subquery, in the order given: PostgreSQL's ``json_agg(... ORDER BY
...)``, SQLite's ``json_group_array`` over an ordered subquery); :func:`unnest` turns what it returns into instances of
the mapped class, each attribute of the type the ORM would have given it (timestamps UTC-aware, UUIDs, dates, booleans,
JSON as parsed). The instances are transient, not in any session: for reading and showing, not for changing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import JSON, Boolean, ColumnElement, Date, Uuid, func, inspect, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import ColumnProperty
from sqlalchemy.sql.selectable import ScalarSelect

from shared.tables import UTCDateTime

T = TypeVar("T")

_Convert = Callable[[Any], Any]


def _timestamp(value: str) -> dt.datetime:
    # PostgreSQL writes the offset of the session's time zone; SQLite keeps UTC without one (see UTCDateTime).
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _converter(column_type: Any) -> _Convert | None:
    if isinstance(column_type, UTCDateTime):
        return _timestamp
    if isinstance(column_type, Uuid):
        return uuid.UUID  # with dashes (PostgreSQL) or 32 hex digits (SQLite)
    if isinstance(column_type, Date):
        return dt.date.fromisoformat
    if isinstance(column_type, Boolean):
        return bool  # SQLite keeps 0 and 1
    return None  # numbers, text and JSON (nested as JSON, see _value) come as they are


def _columns(model: type[Any]) -> list[tuple[str, Any]]:
    return [
        (prop.key, prop.columns[0])
        for prop in inspect(model).attrs
        if isinstance(prop, ColumnProperty) and len(prop.columns) == 1
    ]


def _key(key: str) -> ColumnElement[Any]:
    return literal_column(f"'{key}'")  # an attribute's name (an identifier): written in the SQL, not a parameter


def nested(
    model: type[Any], *where: ColumnElement[bool], outer: Any, order_by: Sequence[Any], dialect: str
) -> ScalarSelect[Any]:
    """A JSON array of the rows of ``model`` that meet ``where``, which names ``outer`` (an entity of the enclosing
    query, to which it is correlated), in the order ``order_by``: one object per row, keyed by attribute. NULL or
    ``[]`` when there is none."""
    columns = _columns(model)
    if dialect == "postgresql":
        pairs = [item for key, column in columns for item in (_key(key), column)]
        row = func.json_build_object(*pairs)
        aggregate = func.json_agg(aggregate_order_by(row, *order_by), type_=JSON)
        return select(aggregate).where(*where).correlate(outer).scalar_subquery()
    # SQLite 3.40 has no ORDER BY inside an aggregate: the rows are aggregated as an ordered subquery gives them (an
    # ordered subquery of an aggregate is never flattened into it, so its order holds).
    ordered = select(*(column for _, column in columns)).where(*where).order_by(*order_by).correlate(outer).subquery()
    pairs = []
    for key, column in columns:
        value = ordered.c[column.key]
        pairs += [_key(key), func.json(value) if isinstance(column.type, JSON) else value]
    return select(func.json_group_array(func.json_object(*pairs), type_=JSON)).scalar_subquery()


def unnest(model: type[T], rows: list[dict[str, Any]] | None) -> list[T]:
    """The instances of ``model`` that :func:`nested` gave as JSON (not in any session)."""
    if not rows:
        return []
    converters = _converters(model)
    new_instance = inspect(model).class_manager.new_instance
    out = []
    for row in rows:
        # Made as the ORM makes the rows it loads: its attributes go in the instance's dict, without the events the
        # constructor fires for each (a few dozen instances a status view; they were a fifth of what it cost).
        instance = new_instance()
        instance.__dict__.update(
            {
                key: convert(value) if convert is not None and value is not None else value
                for key, convert in converters
                for value in (row[key],)
            }
        )
        out.append(instance)
    return out


_CONVERTERS: dict[type[Any], list[tuple[str, _Convert | None]]] = {}


def _converters(model: type[Any]) -> list[tuple[str, _Convert | None]]:
    converters = _CONVERTERS.get(model)
    if converters is None:
        converters = _CONVERTERS[model] = [(key, _converter(column.type)) for key, column in _columns(model)]
    return converters

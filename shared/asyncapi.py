"""Generate the AsyncAPI 3 document of every OneStop event from the catalogue (``onestop asyncapi``)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.events import CATALOGUE, CloudEvent, partner_subject

DEFAULT_PREFIX = "onestop"


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    return dict(top.get("$defs", {}))


def build_document(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    specs = sorted(CATALOGUE.values(), key=lambda s: s.event_type)
    models: list[type[BaseModel]] = [s.data_model for s in specs]
    models += [s.partner_view for s in specs if s.partner_view is not None]
    schemas = _schemas(models)
    envelope = CloudEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    envelope.pop("$defs", None)
    schemas["CloudEvent"] = envelope

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def envelope_for(data_ref: str) -> dict[str, Any]:
        return {
            "allOf": [
                {"$ref": "#/components/schemas/CloudEvent"},
                {"type": "object", "properties": {"data": {"$ref": data_ref}}},
            ]
        }

    for spec in specs:
        key = spec.event_type.replace(".", "_")
        message_name = f"{key}_message"
        messages[message_name] = {
            "name": spec.cloudevents_type,
            "title": spec.event_type,
            "summary": spec.description,
            "contentType": "application/cloudevents+json",
            "headers": {
                "type": "object",
                "properties": {"Nats-Msg-Id": {"type": "string", "description": "The event id (de-duplication)"}},
            },
            "payload": envelope_for(f"#/components/schemas/{spec.data_model.__name__}"),
            "x-dataschema": spec.dataschema,
            "x-partner-visible": spec.partner_visible,
        }
        channels[key] = {
            "address": f"{prefix}.{spec.event_type}",
            "title": spec.event_type,
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        }
        operations[f"publish_{key}"] = {
            "action": "send",
            "title": f"{spec.producer} publishes {spec.event_type}",
            "channel": {"$ref": f"#/channels/{key}"},
        }
        if spec.partner_view is not None:
            partner_message = f"{key}_partner_message"
            messages[partner_message] = {
                "name": spec.cloudevents_type,
                "title": f"{spec.event_type} (partner view)",
                "summary": "What a granted partner receives: only these fields, never personal data.",
                "contentType": "application/cloudevents+json",
                "payload": envelope_for(f"#/components/schemas/{spec.partner_view.__name__}"),
            }
            channels[f"partner_{key}"] = {
                "address": partner_subject(prefix, "{partner_id}", spec.event_type),
                "parameters": {"partner_id": {"description": "The partner's id; its NATS user may read only here"}},
                "title": f"{spec.event_type} for partners",
                "messages": {partner_message: {"$ref": f"#/components/messages/{partner_message}"}},
            }
            operations[f"partner_receive_{key}"] = {
                "action": "receive",
                "title": (
                    f"the partner it names (data.partner_id), if granted, receives {spec.event_type}"
                    if spec.addressed
                    else f"a granted partner receives {spec.event_type}"
                ),
                "channel": {"$ref": f"#/channels/partner_{key}"},
            }
    channels["dead_letters"] = {
        "address": f"{prefix}.dlq.{{service}}.{{consumer}}",
        "title": "Dead letters",
        "description": "Events a consumer gave up on after max_deliver attempts, with the error and the event.",
        "parameters": {"service": {}, "consumer": {}},
        "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
    }
    messages["dead_letter"] = {
        "name": "dead-letter",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["consumer", "service", "error", "deliveries", "failed_at", "event"],
            "properties": {
                "consumer": {"type": "string"},
                "service": {"type": "string"},
                "error": {"type": "string"},
                "deliveries": {"type": "integer"},
                "failed_at": {"type": "string", "format": "date-time"},
                "permanent": {"type": "boolean"},
                "event": {"description": "The original event (or its raw text when it could not be decoded)"},
            },
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "OneStop events",
            "version": "1.0.0",
            "description": (
                "Every event of the OneStop platform: CloudEvents 1.0 in structured JSON mode on one JetStream stream "
                f"(`{prefix.upper()}`, subjects `{prefix}.>`). Published through each service's outbox with "
                "`Nats-Msg-Id` set to the event id. Generated from shared/events.py by `onestop asyncapi`; do not edit."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "make run"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render(prefix: str = DEFAULT_PREFIX) -> str:
    return yaml.safe_dump(build_document(prefix), sort_keys=False, allow_unicode=True, width=120)

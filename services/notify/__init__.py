"""OneStop notify.

Tells residents (inbox, email, SMS; Korean and English) and partner systems (NATS subjects with permissions, signed
webhooks) about every step.

**Residents** read their messages at `GET /v1/inbox` (the inbox keeps a copy of every message) and choose channels,
language and quiet hours for SMS at `PUT /v1/preferences`; what they leave unset follows what they told intake. A
representative the resident named to read their messages reads them with `?resident_id=` (audited: the resident
sees who at `GET /v1/access-log`). A resident who chose `post` gets each notice as a printed letter, listed for the
office at `GET /v1/letters`.

**Partners** receive the *partner view* of the event types an administrator granted them
(`PUT /v1/partners/{id}/grants`), in a CloudEvents 1.0 envelope with the event's own `id` and `type`. Without the
resident's `partner:<partner id>` consent it carries nothing personal beyond the pseudonymous resident id; with it,
`data.consented` adds a few facts of that resident's case (district and language; a decision's amount and reason).

- NATS: `POST /v1/subscriptions {"transport": "nats", "event_types": [...]}`, then subscribe with the partner's NATS
  user to `<prefix>.partner.<partner id>.<event type>` (the user may read nothing else).
- Webhooks: `POST /v1/subscriptions {"transport": "webhook", "url": "https://...", "event_types": [...]}`; the answer
  holds the signing secret (`whsec_...`) once. Requests follow the Standard Webhooks specification
  (https://www.standardwebhooks.com): verify `webhook-signature` (`v1,<base64 HMAC-SHA256 of
  "{webhook-id}.{webhook-timestamp}.{body}">`, any of the space-separated entries may match), refuse old timestamps,
  de-duplicate on `webhook-id`, answer 2xx. Deliveries are at least once, in order per subscription, retried with
  backoff; a long run of failures pauses the subscription (`POST /v1/subscriptions/{id}/resume`). See
  `GET /v1/deliveries` and `POST /v1/deliveries/{id}/redeliver`; rotate the secret with
  `POST /v1/subscriptions/{id}/rotate-secret` (the old one keeps signing for a grace period).
"""

"""OneStop notify.

Tells residents (inbox, email, SMS; Korean and English) and partner systems (NATS subjects with permissions, signed
webhooks) about every step.

**Residents** read their messages at `GET /v1/inbox` (the inbox keeps a copy of every message) and choose channels,
language and quiet hours for SMS at `PUT /v1/preferences`; what they leave unset follows what they told intake. A
representative the resident named to read their messages reads them with `?resident_id=` (audited: the resident
sees who at `GET /v1/access-log`). A resident who chose `post` gets each notice as a printed letter, listed for the
office at `GET /v1/letters`.

**Partners** receive the *partner view* of the event types an administrator granted them, in a CloudEvents 1.0
envelope with the event's own `id` and `type`: ids (the resident's pseudonymous one), outcomes, district and language,
never names, contacts or answers.

- Each grant states its purpose (`PUT /v1/partners/{id}/grants {"grants": [{"event_type": "case.decided",
  "purpose": "payment"}]}`): `payment` (amounts included), `notification` or `outreach` (no amounts: the key is
  absent), `statistics` (aggregate feeds only).
- An event about a resident reaches a partner only if that resident consented to it in intake: `partner:<partner id>`
  (every type the partner is granted) or `partner:<partner id>:<event type>` (that type only). Without it the partner
  receives nothing about the resident, not even a delivery record.
- When the resident withdraws, what is still queued for the partner about them is dropped at once and listed in
  `GET /v1/deliveries` with status `withdrawn` and `withdrawn_at` (a webhook delivery, or a NATS copy that was still
  waiting to be published: transport `nats`); nothing about the resident is kept in it.
- `aggregate.determinations_counted` needs no consent: eligibility determinations counted per district and program
  for each period (a day from midnight in the city, by default), groups smaller than the minimum withheld, no ids.

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

"""OneStop notify.

Tells residents (inbox, email, SMS; Korean and English) and partner systems (NATS subjects with permissions, signed
webhooks) about every step.
"""

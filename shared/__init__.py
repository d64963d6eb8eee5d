"""What all four OneStop services share: events, the bus, the database, settings, auth, observability.

Domain logic never lives here.
"""

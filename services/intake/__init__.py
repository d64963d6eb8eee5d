"""OneStop intake.

The one-stop application API for residents (and caseworkers filing on their behalf), and one status view across
every department.

Someone may act for a resident: a **representative** the resident named (`POST /v1/residents/{id}/representations`:
scopes, an expiry, revocable), signing in as themselves; or **counter staff** under an authority the resident gave
at their office (`POST /v1/residents/{id}/authorities`: a signed form, their ID checked). Every such act is in the
resident's access log: who, on whose behalf, under which authority.
"""

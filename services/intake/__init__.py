"""OneStop intake.

The one-stop application API for residents (and caseworkers filing on their behalf), and one status view across
every department.
"""

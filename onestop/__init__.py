"""The ``onestop`` command: run the platform, mint tokens, migrate, seed, check status."""

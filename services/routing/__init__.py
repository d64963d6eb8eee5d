"""OneStop routing.

Sends each case to the responsible office's queue by jurisdiction, capacity, priority and SLA; caseworkers claim,
review, request information and decide.
"""

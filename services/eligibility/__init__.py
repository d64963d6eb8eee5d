"""OneStop eligibility.

The program catalogue as versioned, explainable rules; evaluates applications, explains every outcome, lists missing
information, and screens populations (with consent).
"""

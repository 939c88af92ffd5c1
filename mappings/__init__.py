"""Declarative mapping rules, allow-listed parameter kinds, the PHI policy and its guard (see README.md)."""

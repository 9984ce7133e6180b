"""Compatibility layers for repositories written for other feature stores (Feast)."""

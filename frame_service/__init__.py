"""Turns uploaded photos and videos into model-ready frames."""

"""Writes the English story from frames."""

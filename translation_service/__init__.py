"""Translates the English story into Thai."""

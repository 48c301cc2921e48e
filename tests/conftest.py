"""Loads the shared fixtures; what they use lives in tests/support."""

pytest_plugins = ["tests.support.fixtures", "tests.support.local_models"]

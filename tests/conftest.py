"""Loads the shared fixtures (tests/support); what they run lives in devstack."""

pytest_plugins = ["tests.support.fixtures", "tests.support.local_models"]

"""The tests' pytest plugins: the shared fixtures over devstack, and the real local models."""

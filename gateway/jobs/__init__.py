"""Durable jobs in the gateway: submission, the workers, the HTTP API."""

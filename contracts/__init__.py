"""The wire between the gateway and the services: messages, subjects and the RPC helpers."""

"""The wire between the gateway and the services: messages and subjects, no NATS."""

"""The NATS runtime every process shares: connect, call, serve, blobs, start-up."""

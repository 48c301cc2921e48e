"""The dev stack: nats-server, the fake OpenAI provider, the services and the gateway, run
together by `make run`, the benchmarks and the tests (never shipped in an image)."""

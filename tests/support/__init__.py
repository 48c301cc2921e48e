"""What the tests share: a real nats-server, the fake OpenAI server, real processes, fixtures."""

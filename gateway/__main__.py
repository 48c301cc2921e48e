"""Run the gateway under uvicorn: python -m gateway."""

import uvicorn

from bus.process import load_settings, start_logging, traced_as
from gateway import config
from gateway.app import create_app

# The name its log lines carry, as its NATS connection does.
SERVICE = "imgstory-gateway"


def main() -> None:
    start_logging(SERVICE)
    settings = load_settings(config.load)
    # log_config=None: uvicorn's own lines (start-up, access, errors) reach the root
    # handler start_logging set, in the same format and with the request id.
    with traced_as(SERVICE):
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()

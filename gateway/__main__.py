"""Run the gateway under uvicorn: python -m gateway."""

import uvicorn

from contracts.logs import configure_logging
from contracts.process import load_settings
from gateway import config
from gateway.app import create_app


def main() -> None:
    configure_logging()
    settings = load_settings(config.load)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()

"""Run the frames service: python -m frame_service."""

import asyncio
import logging

from contracts.rpc import run_until_signalled
from frame_service import config
from frame_service.service import start_service


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = config.load()
    asyncio.run(
        run_until_signalled(
            settings.nats_url, "imgstory-frames", lambda nc: start_service(nc, settings)
        )
    )


if __name__ == "__main__":
    main()

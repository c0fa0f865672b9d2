# The serving image: vqrec with the `service` extra only (no torch). Build from the repo root:
#   docker build -f docker/service.Dockerfile -t vqrec-service .
FROM python:3.11-slim

# a C compiler for the ADC scan kernel (index/_adc.c), built by `pip install`
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
# the serving rooms only: no trainers/ (setup.py leaves a room whose folder is absent out of the package)
COPY vqrec ./vqrec
COPY index ./index
COPY service ./service
RUN pip install --no-cache-dir ".[service]"

ENV VQREC_INDEX_ROOT=/indexes \
    VQREC_HOST=0.0.0.0 \
    VQREC_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["vqrec", "serve"]

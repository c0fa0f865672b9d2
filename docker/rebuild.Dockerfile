# The rebuild job's image: vqrec with its base dependencies only (numpy, faiss, typer, tqdm): the rebuild
# trains faiss codebooks (PQ/OPQ/RQ), so neither torch nor the web stack is needed. Build from the repo root:
#   docker build -f docker/rebuild.Dockerfile -t vqrec-rebuild .
#   docker build -f docker/rebuild.Dockerfile --build-arg EXTRAS=distributed -t vqrec-rebuild .   # + Ray Data
# Run once per schedule (see docker-compose.yml); exit codes: `vqrec rebuild --help`.
FROM python:3.11-slim

# a C compiler for the ADC scan kernel (index/_adc.c), built by `pip install`
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
# the rebuild job trains and publishes: no service/ (it notifies the API over HTTP)
COPY vqrec ./vqrec
COPY index ./index
COPY trainers ./trainers
# EXTRAS=distributed adds Ray Data for `[distributed] ray = true` (encode + evaluation on a Ray cluster)
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

# faiss's OpenMP threads spin-wait by default; a batch job sharing the host with the service should not
ENV OMP_WAIT_POLICY=PASSIVE
CMD ["vqrec", "rebuild", "--config", "/config/rebuild.toml", "--quiet"]

# The motops image: the library, the CLI, the flows. Used by the Prefect worker (compose and
# Kubernetes) and the GPU retraining job. Build from the repository root:
#   docker build -f infra/docker/motops.Dockerfile -t motops/motops:latest .
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 motops

WORKDIR /opt/motops
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY src ./src
COPY stages ./stages
COPY flows ./flows
COPY dvc.yaml params.yaml prefect.yaml ./
RUN pip install --no-cache-dir --no-deps -e . && pip install --no-cache-dir "dvc-s3>=3.2,<4"

ENV YOLO_OFFLINE=1 DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=false
USER motops
ENTRYPOINT []
CMD ["motops", "--help"]

# The edge image: the runtime (`motops track --engine`) and the fleet agent (`motops edge ...`),
# installed from the base dependencies only -- numpy, OpenCV (headless), ONNX Runtime, lap, boto3,
# cryptography, tuf, pydantic, PyYAML, typer, tqdm -- at the versions requirements.lock pins.
# No torch, Ultralytics, MLflow, Prefect, DVC, Great Expectations or polars. Build from the
# repository root:
#   docker build -f infra/docker/edge.Dockerfile -t motops/edge:latest .
#   docker run -v /var/lib/motops-edge:/var/lib/motops-edge -v /etc/motops:/etc/motops:ro \
#       --env-file /etc/motops/edge.env motops/edge:latest                    # the agent (edge run)
#   docker run ... motops/edge:latest track rtsp://camera/stream --engine /var/lib/motops-edge/current
# On NVIDIA devices add the `tensorrt` extra (base image with the CUDA driver libraries, e.g.
# nvcr.io/nvidia/l4t-jetpack or nvidia/cuda:*-runtime, then `pip install -c requirements.lock ".[tensorrt]"`).
FROM python:3.11-slim AS build

WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY src ./src
# A wheel of motops itself (build isolation fetches setuptools); its dependencies come next, pinned.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/motops-edge --uid 1000 motops
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -c /tmp/requirements.lock /wheels/motops-*.whl \
    && rm -rf /wheels /tmp/requirements.lock

ENV YOLO_OFFLINE=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
USER motops
WORKDIR /var/lib/motops-edge
VOLUME ["/var/lib/motops-edge"]
ENTRYPOINT ["motops"]
CMD ["edge", "run", "-p", "/etc/motops/edge.yaml"]

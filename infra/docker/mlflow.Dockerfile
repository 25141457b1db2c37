# MLflow tracking server + model registry with a PostgreSQL store and S3 artifacts.
# The upstream image has neither the Postgres driver nor boto3, so they are baked in here
# (never installed when the container starts).
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir \
        "mlflow==${MLFLOW_VERSION}" \
        "psycopg2-binary>=2.9,<3" \
        "boto3>=1.44,<1.45" \
    && useradd --create-home --uid 1000 mlflow

USER mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

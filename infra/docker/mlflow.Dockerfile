# MLflow tracking server + model registry with a PostgreSQL store, S3 artifacts and basic auth.
# The upstream image has neither the Postgres driver, boto3 nor Flask-WTF (the basic-auth app's
# CSRF protection), so they are baked in here (never installed when the container starts).
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir \
        "mlflow==${MLFLOW_VERSION}" \
        "psycopg2-binary>=2.9,<3" \
        "boto3>=1.44,<1.45" \
        "Flask-WTF>=1.2,<2" \
    && useradd --create-home --uid 1000 mlflow \
    && install -d -o mlflow -g mlflow -m 0700 /mlflow-auth   # the auth store's volume, owned by mlflow

USER mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--app-name", "basic-auth", "--host", "0.0.0.0", "--port", "5000"]

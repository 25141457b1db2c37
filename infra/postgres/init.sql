-- Runs once, when the Postgres volume is created: MLflow uses the database named in
-- POSTGRES_DB (mlflow); Prefect's server gets a database of its own.
CREATE DATABASE prefect;

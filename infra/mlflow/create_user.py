"""Create (or re-key) one MLflow basic-auth user, as the admin; run by compose's `mlflow-users` job.

    MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \
    MOTOPS_NEW_USER_PASSWORD=... python infra/mlflow/create_user.py motops-worker

The new user's password is read from ``MOTOPS_NEW_USER_PASSWORD`` (never from the command line,
where ``ps`` would show it). An existing user gets the password again, so re-running rotates it.
Exit 1 with one line when the admin's credentials are refused or a variable is missing.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print("usage: create_user.py USERNAME  (password in MOTOPS_NEW_USER_PASSWORD)", file=sys.stderr)
        return 2
    username = argv[0].strip()
    missing = [name for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                 "MOTOPS_NEW_USER_PASSWORD") if not os.environ.get(name)]
    if missing:
        print(f"error: set {', '.join(missing)}", file=sys.stderr)
        return 1
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = AuthServiceClient(uri)
    password = os.environ["MOTOPS_NEW_USER_PASSWORD"]
    try:
        try:
            client.get_user(username)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_user(username, password)
            print(f"created MLflow user {username!r} at {uri}")
            return 0
        client.update_user_password(username, password)
        print(f"MLflow user {username!r} at {uri} exists; password set again")
        return 0
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: MLflow at {uri} as {os.environ['MLFLOW_TRACKING_USERNAME']!r}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

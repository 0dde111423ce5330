"""Schemathesis hooks for DocFlow (see tests/schemathesis.rs).

Authentication: a fresh access token from a real login, renewed every
second, because the run itself calls /auth/logout, which (correctly) revokes
the token it was sent with. Credentials come from DOCFLOW_BASE_URL,
DOCFLOW_EMAIL and DOCFLOW_PASSWORD.
"""

import os

import requests
import schemathesis


@schemathesis.auth(refresh_interval=1)
class FreshLogin:
    def get(self, case, context):
        response = requests.post(
            os.environ["DOCFLOW_BASE_URL"] + "/api/v1/auth/login",
            json={
                "email": os.environ["DOCFLOW_EMAIL"],
                "password": os.environ["DOCFLOW_PASSWORD"],
            },
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"

"""scripts/api-fuzz's credentials for schemathesis: a real login in the model the run is for.

TESSERA_FUZZ_BASE     the server's base URL
TESSERA_FUZZ_MODEL    bearer | session | hybrid
TESSERA_FUZZ_USER     the account to log in as (its password is TESSERA_FUZZ_PASSWORD)
TESSERA_FUZZ_CLIENT   "id:secret" of an introspection client, for the routes only resource servers use

Operations that declare no security get no credential (a login route given the browser's cookie
would end that login). A 401 makes schemathesis log in again and replay the request, so a run
that logs itself out, revokes its token or changes its password goes on with a fresh login.
"""

import base64
import json
import os
import urllib.request

import schemathesis

BASE = os.environ["TESSERA_FUZZ_BASE"].rstrip("/")
MODEL = os.environ["TESSERA_FUZZ_MODEL"]
USER = os.environ["TESSERA_FUZZ_USER"]
PASSWORD = os.environ["TESSERA_FUZZ_PASSWORD"]
CLIENT = os.environ["TESSERA_FUZZ_CLIENT"]

LOGIN_PATH = {"bearer": "/v1/token", "session": "/v1/session/login", "hybrid": "/v1/hybrid/login"}
# What only a resource server calls: HTTP Basic with its client credentials. The revocation stream
# is left with the user's credential (refused at once): given the client's, it never ends, and
# schemathesis reads a response to its end. Its own tests cover it.
CLIENT_PATHS = {"/v1/token/introspect"}


def _login() -> dict:
    body = json.dumps({"username": USER, "password": PASSWORD}).encode()
    request = urllib.request.Request(
        BASE + LOGIN_PATH[MODEL], data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
        cookies = {}
        for line in response.headers.get_all("set-cookie") or []:
            name, _, rest = line.partition("=")
            cookies[name] = rest.split(";", 1)[0]
    if MODEL == "bearer":
        return {"headers": {"Authorization": "Bearer " + answer["access_token"]}, "cookies": {}}
    names = ["__Host-tessera"] if MODEL == "session" else ["__Host-tessera-at", "__Host-tessera-rt"]
    return {
        "headers": {"X-CSRF-Token": answer["csrf_token"]},
        "cookies": {name: cookies[name] for name in names},
    }


@schemathesis.auth()
class TesseraLogin:
    def get(self, case, context):
        return _login()

    def set(self, case, data, context):
        operation = context.operation
        if operation.path in CLIENT_PATHS:
            basic = base64.b64encode(CLIENT.encode()).decode()
            case.headers = {**(case.headers or {}), "Authorization": "Basic " + basic}
            return
        if operation.definition.raw.get("security") is None:
            return
        case.headers = {**(case.headers or {}), **data["headers"]}
        case.cookies = {**(case.cookies or {}), **data["cookies"]}

"""Shared helpers of the gateway client scripts.

Every script takes ``--base-url URL`` (the gateway's OpenAI base URL, ending in ``/v1``) and reads
the client key from the environment variable ``PROMPT_GATEWAY_API_KEY`` (unset: a placeholder,
for a gateway started without ``--client-key-env``). The gateway is expected to point at
``fake_openai.py --role upstream``, whose replies are deterministic (``echo: <last user
message>``). Each script prints one JSON summary on its last line of stdout —
``{"script", "ok", "checks": [{"name", "ok", "detail"}], "openai": VERSION}`` — and exits 0 when
every check passed, 1 when one failed, 2 when it could not run.
"""

import argparse
import json
import os
import sys
import traceback
import uuid

import openai

# The HTTP library the openai client itself uses, for the requests it cannot send: openai 3 is
# built on `httpx2`, openai 1 and 2 on `httpx`, with the same API.
try:
    import httpx2 as httpx
except ImportError:
    import httpx

KEY_ENV = "PROMPT_GATEWAY_API_KEY"
PLACEHOLDER_KEY = "sk-promptkit-tests"


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--base-url", required=True, help="the gateway's base URL, e.g. http://127.0.0.1:8787/v1")
    p.add_argument("--model", default="fake-model")
    return p


def api_key():
    return os.environ.get(KEY_ENV) or PLACEHOLDER_KEY


def client(base_url, key=None, **kwargs):
    # No retries: a failure must show as it happened, not be retried away.
    return openai.OpenAI(base_url=base_url, api_key=key or api_key(), max_retries=0, timeout=30, **kwargs)


def root_url(base_url):
    """The server root (for /health): the base URL without its trailing /v1."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def nonce():
    """A word no earlier run sent, so the first call of a test is a cache miss."""
    return uuid.uuid4().hex


class Checks:
    """Collects named checks; ``run`` prints the summary and exits."""

    def __init__(self, script):
        self.script = script
        self.items = []

    def check(self, name, ok, detail=""):
        self.items.append({"name": name, "ok": bool(ok), "detail": str(detail)[:500]})
        return bool(ok)

    def equal(self, name, got, expected):
        return self.check(name, got == expected, f"got {got!r}, expected {expected!r}")

    def summary(self, error=None):
        doc = {
            "script": self.script,
            "ok": error is None and all(c["ok"] for c in self.items) and bool(self.items),
            "checks": self.items,
            "openai": openai.__version__,
        }
        if error is not None:
            doc["error"] = error
        return doc

    def run(self, body):
        """Runs ``body(self)``; an exception is a failed run (exit 2) with its traceback."""
        error = None
        try:
            body(self)
        except Exception as err:  # noqa: BLE001 - the summary reports whatever went wrong
            traceback.print_exc(file=sys.stderr)
            error = f"{type(err).__name__}: {err}"
        doc = self.summary(error)
        print(json.dumps(doc))
        if error is not None:
            sys.exit(2)
        sys.exit(0 if doc["ok"] else 1)


def expect_error(checks, name, error_type, call):
    """Runs ``call`` and checks that it raises ``error_type``; returns the error (or None)."""
    try:
        call()
    except error_type as err:
        checks.check(name, True, f"{type(err).__name__} {getattr(err, 'status_code', '')}")
        return err
    except openai.APIError as err:
        checks.check(name, False, f"raised {type(err).__name__} {getattr(err, 'status_code', '')}: {err}")
        return None
    checks.check(name, False, f"no {error_type.__name__} raised")
    return None


def error_body_ok(body):
    """Whether ``body`` is an OpenAI-style error: {"error": {"message": str, "type": str, ...}}."""
    if not isinstance(body, dict):
        return False
    err = body.get("error")
    return isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)

#!/usr/bin/env python3
"""A tiny OpenAI-compatible server (standard library only) for the gateway client tests.

Two roles:

* ``--role upstream``: a deterministic model. The reply to a chat is ``echo: <last user
  message>`` (split into word deltas when streamed); when the request offers tools, the reply is
  one call of the first tool with ``{"q": "<last user message>"}``. ``/v1/models`` lists
  ``fake-model``. This is the upstream a real gateway under test should point at: the client
  scripts check that its echo comes back through the gateway.
* ``--role gateway`` (default): the same model behind a stand-in for ``prompt serve``, so that
  the client scripts can be run without the gateway: whole-request cache with
  ``x-promptkit-cache: hit|miss``, ``Cache-Control: no-cache``, ``--replay-only`` (a miss is
  404 ``cache_miss``), ``--client-key`` (401 without it, ``/health`` open), ``--max-body-bytes``
  (413), OpenAI-style 400s for malformed JSON and wrong types, and the template
  ``demo/greet`` (vars: ``name``; a missing var is a 400 naming it, an unknown template a 404).

It prints ``listening on http://127.0.0.1:PORT`` on its first line of stdout once it accepts
connections (``--port 0``, the default, picks a free port). Only loopback addresses.
"""

import argparse
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"
TEMPLATES = {
    # name -> (system, user with {name} placeholders, required vars)
    "demo/greet": ("You greet people.", "Say hello to {name}.", ["name"]),
}


def words(text):
    return len(text.split())


def last_user(messages):
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def model_reply(request):
    """The upstream's deterministic answer: (content, tool_calls, usage)."""
    messages = request["messages"]
    prompt = last_user(messages)
    prompt_tokens = sum(words(str(m.get("content") or "")) for m in messages)
    tools = request.get("tools") or []
    if tools:
        name = tools[0].get("function", {}).get("name", "tool")
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        calls = [
            {
                "id": f"call_{digest}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"q": prompt})},
            }
        ]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5}
        return None, calls, usage
    content = f"echo: {prompt}"
    completion = words(content)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    return content, None, usage


def completion_body(request, content, calls, usage, ident):
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": usage,
    }


def stream_chunks(request, content, calls, usage, ident):
    """The SSE chunks of a streamed reply (without the final [DONE])."""
    model = request.get("model") or MODEL
    created = int(time.time())

    def chunk(delta, finish=None):
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    if calls:
        for i, call in enumerate(calls):
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            args = call["function"]["arguments"]
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
        out.append(chunk({}, "tool_calls"))
    else:
        pieces = content.split(" ")
        for i, piece in enumerate(pieces):
            out.append(chunk({"content": piece if i == 0 else " " + piece}))
        out.append(chunk({}, "stop"))
    include_usage = (request.get("stream_options") or {}).get("include_usage")
    if include_usage:
        last = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        out.append(last)
    return out


class ApiError(Exception):
    def __init__(self, status, message, kind="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def validate(request):
    if not isinstance(request, dict):
        raise ApiError(400, "the request body must be a JSON object")
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be an array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"'messages[{i}]' must be an object with a 'role'", param=f"messages[{i}]")
    if "model" in request and not isinstance(request["model"], str):
        raise ApiError(400, "'model' must be a string", param="model")
    if "stream" in request and not isinstance(request["stream"], bool):
        raise ApiError(400, "'stream' must be a boolean", param="stream")


def render_template(request):
    """Gateway role: replaces a template request by its rendered messages."""
    name = request.pop("template")
    variables = request.pop("vars", None) or {}
    if not isinstance(name, str) or name.split("@")[0] not in TEMPLATES:
        raise ApiError(404, f"unknown template '{name}'", code="template_not_found", param="template")
    if not isinstance(variables, dict):
        raise ApiError(400, "'vars' must be an object", param="vars")
    system, user, required = TEMPLATES[name.split("@")[0]]
    for var in required:
        if var not in variables:
            raise ApiError(400, f"template '{name}': missing variable '{var}'", code="template_invalid", param=f"vars.{var}")
    rendered = [
        {"role": "system", "content": system},
        {"role": "user", "content": user.format(**variables)},
    ]
    request["messages"] = rendered + list(request.get("messages") or [])
    request.setdefault("model", MODEL)


class State:
    def __init__(self, args):
        self.args = args
        self.cache = {}
        self.lock = threading.Lock()
        self.upstream_calls = 0


def make_handler(state):
    args = state.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):  # quiet
            pass

        def send_json(self, status, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            if args.role != "gateway" or not args.client_key:
                return True
            return self.headers.get("authorization") == f"Bearer {args.client_key}"

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/health":
                return self.send_json(200, {"status": "ok"})
            if not self.authorized():
                return self.send_json(401, ApiError(401, "missing or wrong API key", "authentication_error", "invalid_api_key").body)
            if path == "/v1/models":
                return self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "promptkit-tests"}]})
            if path == "/stats":
                return self.send_json(200, {"upstream_calls": state.upstream_calls})
            return self.send_json(404, ApiError(404, f"no route {path}", code="not_found").body)

        def do_POST(self):
            try:
                self.handle_post()
            except ApiError as err:
                self.send_json(err.status, err.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def handle_post(self):
            length = int(self.headers.get("content-length") or 0)
            if args.role == "gateway" and length > args.max_body_bytes:
                # Read (and drop) the body so the client sees the answer, then close.
                remaining = length
                while remaining > 0:
                    got = self.rfile.read(min(remaining, 1 << 16))
                    if not got:
                        break
                    remaining -= len(got)
                self.close_connection = True
                raise ApiError(413, f"request body larger than {args.max_body_bytes} bytes", code="body_too_large")
            raw = self.rfile.read(length)
            if self.path.split("?")[0] != "/v1/chat/completions":
                raise ApiError(404, f"no route {self.path}", code="not_found")
            if not self.authorized():
                raise ApiError(401, "missing or wrong API key", "authentication_error", "invalid_api_key")
            try:
                request = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as err:
                raise ApiError(400, f"malformed JSON: {err}") from None
            if args.role == "gateway" and isinstance(request, dict) and "template" in request:
                render_template(request)
            validate(request)
            stream = bool(request.get("stream"))
            if args.role == "upstream":
                content, calls, usage = model_reply(request)
                state.upstream_calls += 1
                return self.reply(request, stream, content, calls, usage, {})
            key_doc = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
            key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()
            no_cache = "no-cache" in (self.headers.get("cache-control") or "")
            with state.lock:
                entry = None if no_cache else state.cache.get(key)
            if entry is not None:
                return self.reply(request, stream, *entry, {"x-promptkit-cache": "hit"})
            if args.replay_only:
                raise ApiError(404, "no cached answer for this request (replay-only mode)", code="cache_miss")
            entry = model_reply(request)
            with state.lock:
                state.upstream_calls += 1
                state.cache[key] = entry
            return self.reply(request, stream, *entry, {"x-promptkit-cache": "miss"})

        def reply(self, request, stream, content, calls, usage, headers):
            ident = "chatcmpl-" + hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
            if not stream:
                return self.send_json(200, completion_body(request, content, calls, usage, ident), headers)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            for chunk in stream_chunks(request, content, calls, usage, ident):
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["gateway", "upstream"], default="gateway")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--replay-only", action="store_true")
    parser.add_argument("--client-key", default=None, help="the key clients must send (gateway role)")
    parser.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--seconds", type=float, default=600, help="stop by itself after this long")
    args = parser.parse_args()
    state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    timer = threading.Timer(args.seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

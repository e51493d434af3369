#!/usr/bin/env python3
"""A gateway with --client-key-env: no or a wrong key is a 401; the right one works; /health is open."""

import openai

from common import httpx, KEY_ENV, Checks, api_key, client, error_body_ok, expect_error, nonce, parser, root_url


def main(args):
    def body(c):
        if api_key() == "sk-promptkit-tests":
            raise RuntimeError(f"set {KEY_ENV} to the gateway's client key")
        messages = [{"role": "user", "content": f"auth {nonce()}"}]
        wrong = client(args.base_url, key="sk-wrong")
        err = expect_error(
            c,
            "a wrong key raises AuthenticationError",
            openai.AuthenticationError,
            lambda: wrong.chat.completions.create(model=args.model, messages=messages),
        )
        if err is not None:
            c.check("OpenAI-style 401 body", error_body_ok(err.response.json()), err.response.text)
        expect_error(c, "a wrong key cannot list models", openai.AuthenticationError, lambda: list(wrong.models.list()))
        with httpx.Client(timeout=30) as http:
            r = http.post(args.base_url.rstrip("/") + "/chat/completions", json={"model": args.model, "messages": messages})
            c.equal("no Authorization header is a 401", r.status_code, 401)
            r = http.get(root_url(args.base_url) + "/health")
            c.equal("/health needs no key", r.status_code, 200)
        resp = client(args.base_url).chat.completions.create(model=args.model, messages=messages)
        c.check("the right key works", bool(resp.choices[0].message.content), resp.choices[0].message.content)

    Checks("auth").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

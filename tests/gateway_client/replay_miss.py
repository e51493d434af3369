#!/usr/bin/env python3
"""A gateway in --replay-only mode answers a miss with 404 and code cache_miss."""

import openai

from common import Checks, client, error_body_ok, expect_error, nonce, parser


def main(args):
    def body(c):
        api = client(args.base_url)
        messages = [{"role": "user", "content": f"never seen {nonce()}"}]
        for stream in (False, True):
            label = "streamed " if stream else ""
            err = expect_error(
                c,
                f"a {label}miss raises NotFoundError",
                openai.NotFoundError,
                lambda: list(api.chat.completions.create(model=args.model, messages=messages, stream=stream))
                if stream
                else api.chat.completions.create(model=args.model, messages=messages),
            )
            if err is not None:
                c.equal(f"{label}code is cache_miss", err.code, "cache_miss")
                c.check(f"{label}OpenAI-style error body", error_body_ok(err.response.json()), err.response.text)

    Checks("replay_miss").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

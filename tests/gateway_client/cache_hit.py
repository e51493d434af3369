#!/usr/bin/env python3
"""The second identical call is a cache hit (x-promptkit-cache), whole or streamed."""

from common import Checks, client, nonce, parser

HEADER = "x-promptkit-cache"


def main(args):
    def body(c):
        api = client(args.base_url)
        messages = [{"role": "user", "content": f"cache me {nonce()}"}]

        def call(**kwargs):
            raw = api.chat.completions.with_raw_response.create(model=args.model, messages=messages, **kwargs)
            return raw.headers.get(HEADER), raw.parse()

        first_state, first = call()
        second_state, second = call()
        c.equal("first call is a miss", first_state, "miss")
        c.equal("second call is a hit", second_state, "hit")
        c.equal("same answer", second.choices[0].message.content, first.choices[0].message.content)
        c.check(
            "a hit reports the original usage",
            first.usage is not None and second.usage is not None and second.usage.total_tokens == first.usage.total_tokens,
            f"{first.usage} / {second.usage}",
        )

        # A streamed request is served from the entry the whole one left.
        state, stream = call(stream=True, stream_options={"include_usage": True})
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        c.equal("streamed call after a whole one is a hit", state, "hit")
        c.equal("streamed hit replays the answer", text, first.choices[0].message.content)

        # Cache-Control: no-cache skips the read.
        state, _ = call(extra_headers={"Cache-Control": "no-cache"})
        c.equal("Cache-Control: no-cache is a miss", state, "miss")

        # A different request is a miss.
        messages.append({"role": "assistant", "content": "ok"})
        messages.append({"role": "user", "content": "and again"})
        state, _ = call()
        c.equal("a different request is a miss", state, "miss")

    Checks("cache_hit").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

#!/usr/bin/env python3
"""A streamed chat: the deltas add up to the answer, and the usage chunk comes last."""

from common import Checks, client, nonce, parser


def main(args):
    def body(c):
        api = client(args.base_url)
        word = nonce()
        stream = api.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": f"stream {word} please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, chunks, after_usage = [], None, None, 0, 0
        for chunk in stream:
            chunks += 1
            if usage is not None:
                after_usage += 1
            for choice in chunk.choices:
                if choice.delta.content:
                    text.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
        c.check("several chunks", chunks > 2, chunks)
        c.equal("deltas add up to the answer", "".join(text), f"echo: stream {word} please")
        c.equal("finish_reason", finish, "stop")
        c.check("usage chunk", usage is not None and usage.total_tokens > 0, usage)
        c.equal("usage chunk is the last", after_usage, 0)

        # Without include_usage no usage chunk is sent.
        stream = api.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": f"stream {nonce()}"}],
            stream=True,
        )
        usages = [chunk.usage for chunk in stream if chunk.usage is not None]
        c.equal("no usage chunk unless asked", usages, [])

    Checks("chat_stream").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

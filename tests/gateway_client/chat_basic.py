#!/usr/bin/env python3
"""A non-streaming chat and the model list, through the official openai client."""

from common import Checks, client, nonce, parser


def main(args):
    def body(c):
        api = client(args.base_url)
        word = nonce()
        resp = api.chat.completions.create(
            model=args.model,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"hello {word}"},
            ],
        )
        c.equal("object", resp.object, "chat.completion")
        c.equal("one choice", len(resp.choices), 1)
        choice = resp.choices[0]
        c.equal("content echoes the prompt", choice.message.content, f"echo: hello {word}")
        c.equal("role", choice.message.role, "assistant")
        c.equal("finish_reason", choice.finish_reason, "stop")
        c.check("usage counted", resp.usage is not None and resp.usage.total_tokens > 0, resp.usage)
        if resp.usage is not None:
            c.equal(
                "usage adds up",
                resp.usage.prompt_tokens + resp.usage.completion_tokens,
                resp.usage.total_tokens,
            )
        c.check("model named", bool(resp.model), resp.model)
        models = [m.id for m in api.models.list()]
        c.check("models listed", len(models) > 0, models)

    Checks("chat_basic").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

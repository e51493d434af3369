#!/usr/bin/env python3
"""Tools pass through the gateway: the client parses the tool calls, whole and streamed."""

import json

from common import Checks, client, nonce, parser

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Looks a word up.",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
]


def main(args):
    def body(c):
        api = client(args.base_url)
        prompt = f"look up {nonce()}"
        messages = [{"role": "user", "content": prompt}]
        resp = api.chat.completions.create(model=args.model, messages=messages, tools=TOOLS)
        choice = resp.choices[0]
        calls = choice.message.tool_calls or []
        c.equal("finish_reason", choice.finish_reason, "tool_calls")
        c.equal("one tool call", len(calls), 1)
        if calls:
            call = calls[0]
            c.equal("tool name", call.function.name, "lookup")
            c.equal("arguments parse", json.loads(call.function.arguments), {"q": prompt})
            c.check("call id", bool(call.id), call.id)
            # The conversation goes on with the tool's result.
            follow = messages + [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                {"role": "tool", "tool_call_id": call.id, "content": "a word"},
                {"role": "user", "content": "thanks"},
            ]
            resp2 = api.chat.completions.create(model=args.model, messages=follow)
            c.equal("the tool result is accepted", resp2.choices[0].message.content, "echo: thanks")

        prompt = f"stream a lookup {nonce()}"
        stream = api.chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": prompt}], tools=TOOLS, stream=True
        )
        parts, name, finish = {}, None, None
        for chunk in stream:
            for ch in chunk.choices:
                for tc in ch.delta.tool_calls or []:
                    if tc.function and tc.function.name:
                        name = tc.function.name
                    if tc.function and tc.function.arguments:
                        parts[tc.index] = parts.get(tc.index, "") + tc.function.arguments
                if ch.finish_reason:
                    finish = ch.finish_reason
        c.equal("streamed tool name", name, "lookup")
        c.equal("streamed arguments add up", json.loads(parts.get(0, "null")), {"q": prompt})
        c.equal("streamed finish_reason", finish, "tool_calls")

    Checks("tools").run(body)


if __name__ == "__main__":
    main(parser(__doc__).parse_args())

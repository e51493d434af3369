#!/usr/bin/env python3
"""Bad input gets OpenAI-style errors and never hurts the server (raw httpx: the client can't send it)."""


from common import httpx, Checks, api_key, client, error_body_ok, nonce, parser, root_url


def main(args):
    def body(c):
        url = args.base_url.rstrip("/") + "/chat/completions"
        headers = {"authorization": f"Bearer {api_key()}", "content-type": "application/json"}
        with httpx.Client(timeout=30) as http:

            def post(name, content, expected):
                r = http.post(url, content=content, headers=headers)
                c.equal(f"{name}: status", r.status_code, expected)
                try:
                    doc = r.json()
                except ValueError:
                    doc = None
                c.check(f"{name}: OpenAI-style error body", error_body_ok(doc), r.text[:300])

            post("malformed JSON", b'{"model": "m", "messages": [', 400)
            post("not UTF-8", b'{"model": "\xff\xfe"}', 400)
            post("a JSON array", b"[1, 2]", 400)
            post("messages of the wrong type", b'{"model": "m", "messages": "hello"}', 400)
            post("a message without a role", b'{"model": "m", "messages": [{"content": "x"}]}', 400)
            post("stream of the wrong type", b'{"model": "m", "messages": [], "stream": "yes"}', 400)
            if args.max_body_bytes:
                post("an oversize body", b'{"pad": "' + b"x" * (args.max_body_bytes + 1) + b'"}', 413)

            # A client that leaves mid-stream.
            payload = {
                "model": args.model,
                "stream": True,
                "messages": [{"role": "user", "content": f"leave early {nonce()} " + "word " * 50}],
            }
            with http.stream("POST", url, json=payload, headers=headers) as r:
                c.equal("stream opens", r.status_code, 200)
                for _ in r.iter_bytes():
                    break

            r = http.get(root_url(args.base_url) + "/health")
            c.equal("still healthy", r.status_code, 200)
        resp = client(args.base_url).chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": "still there"}]
        )
        c.equal("still serving", resp.choices[0].message.content, "echo: still there")

    Checks("bad_input").run(body)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--max-body-bytes", type=int, default=0, help="the gateway's --max-body-bytes (0: skip the 413 check)")
    main(p.parse_args())

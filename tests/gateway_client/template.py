#!/usr/bin/env python3
"""Template requests: extra_body {"template", "vars"} renders on the server; bad ones are 400/404."""

import json

import openai

from common import Checks, client, expect_error, nonce, parser


def main(args):
    def body(c):
        api = client(args.base_url)
        variables = json.loads(args.vars)
        value = nonce()
        variables[args.var] = value
        resp = api.chat.completions.create(
            model=args.model,
            messages=[],
            extra_body={"template": args.template, "vars": variables},
        )
        content = resp.choices[0].message.content or ""
        c.check("the rendered prompt reached the model", value in content, content)

        # Messages in the request follow the rendered ones.
        resp = api.chat.completions.create(
            model=args.model,
            messages=[{"role": "user", "content": "and one more thing"}],
            extra_body={"template": args.template, "vars": variables},
        )
        c.equal("request messages follow the rendered ones", resp.choices[0].message.content, "echo: and one more thing")

        missing = {k: v for k, v in variables.items() if k != args.var}
        err = expect_error(
            c,
            "a missing variable is a 400",
            openai.BadRequestError,
            lambda: api.chat.completions.create(
                model=args.model, messages=[], extra_body={"template": args.template, "vars": missing}
            ),
        )
        if err is not None:
            c.check("the 400 names the variable", args.var in str(err), str(err))

        expect_error(
            c,
            "an unknown template is a 404",
            openai.NotFoundError,
            lambda: api.chat.completions.create(
                model=args.model, messages=[], extra_body={"template": "no_such/template", "vars": variables}
            ),
        )

    Checks("template").run(body)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--template", default="demo/greet", help="a template the gateway knows")
    p.add_argument("--vars", default="{}", help="its other variables, as JSON")
    p.add_argument("--var", default="name", help="the required string variable the test fills with a nonce")
    main(p.parse_args())

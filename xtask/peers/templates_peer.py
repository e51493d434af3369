"""Peer for prompt-templates: Python Jinja2 compiling and rendering the same template text
with the same variables (target/bench-data/templates/peer.json)."""

import json
import os

import jinja2
from jinja2 import Environment, StrictUndefined

from _harness import Results, args, measure


def main():
    a = args()
    with open(os.path.join(a.data, "templates", "peer.json"), encoding="utf-8") as f:
        peer = json.load(f)
    system_src, user_src, variables = peer["system"], peer["user"], peer["vars"]
    results = Results(a.out, {"jinja2": jinja2.__version__})

    # Compile: a fresh strict environment compiling both bodies, as a cold load compiles both.
    def compile_both():
        env = Environment(undefined=StrictUndefined)
        env.from_string(system_src)
        env.from_string(user_src)

    results.run("jinja2_compile", lambda: measure(compile_both, a.quick))

    env = Environment(undefined=StrictUndefined)
    system_t = env.from_string(system_src)
    user_t = env.from_string(user_src)

    # Render: both bodies with the same variables, as our render returns system and user.
    def render_both():
        system_t.render(variables)
        user_t.render(variables)

    results.run("jinja2_render", lambda: measure(render_both, a.quick))
    results.check("rendered", {"system": system_t.render(variables), "user": user_t.render(variables)})
    results.write()


if __name__ == "__main__":
    main()

"""Peer for prompt-cache: python-diskcache get/set with the same keys (cache/keys.txt) and the
same value (cache/response.txt); key derivation is SHA-256 over the same request text."""

import hashlib
import itertools
import json
import os
import shutil
import tempfile

import diskcache
from diskcache import Cache

from _harness import Results, args, measure, measure_runs

HIT_ENTRIES = 1000


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def main():
    a = args()
    d = os.path.join(a.data, "cache")
    system, prompt, response = (read(os.path.join(d, n)) for n in ("system.txt", "prompt.txt", "response.txt"))
    request = json.loads(read(os.path.join(d, "request.json")))
    keys = read(os.path.join(d, "keys.txt")).split()
    results = Results(a.out, {"diskcache": diskcache.__version__})
    work = a.work or tempfile.mkdtemp(prefix="promptkit-diskcache-")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    def derive():
        # The whole request, unambiguously: length-prefixed fields, then SHA-256 as 64 hex chars.
        parts = [request["namespace"], request["provider"], request["model"], "system", system,
                 "user", prompt, repr(request["temperature"]), str(request["max_tokens"]),
                 "top_p", repr(request["top_p"]), "num_ctx", str(request["num_ctx"])]
        encoded = "".join(f"{len(p)}:{p}" for p in parts).encode()
        return hashlib.sha256(encoded).hexdigest()

    cache = Cache(os.path.join(work, "hit"))
    for key in keys[:HIT_ENTRIES]:
        cache.set(key, response)
    cache.set(derive(), response)
    hit_keys = itertools.cycle(keys[:HIT_ENTRIES])
    miss_keys = itertools.cycle(k[::-1] for k in keys[:HIT_ENTRIES])

    results.run("sha256", lambda: measure(derive, a.quick))
    results.run("diskcache_get_hit", lambda: measure(lambda: cache.get(next(hit_keys)), a.quick))
    results.run("diskcache_sha256_get", lambda: measure(lambda: cache.get(derive()), a.quick))
    results.run("diskcache_get_miss", lambda: measure(lambda: cache.get(next(miss_keys)), a.quick))
    counter = itertools.count()
    results.run("diskcache_set", lambda: measure(lambda: cache.set(f"new-{next(counter)}", response), a.quick))
    results.check("hit_value_matches", cache.get(keys[0]) == response)
    cache.close()

    # Reload: opening a cache directory that holds 10,000 entries (diskcache reads lazily from
    # SQLite, so this is its whole start-up cost) and serving one hit.
    reload_dir = os.path.join(work, "reload")
    with Cache(reload_dir) as full:
        for key in keys:
            full.set(key, response)

    def reopen():
        with Cache(reload_dir) as c:
            c.get(keys[0])

    results.run("diskcache_open_10k", lambda: measure_runs(reopen, 5 if a.quick else 20))
    shutil.rmtree(work, ignore_errors=True)
    results.write()


if __name__ == "__main__":
    main()

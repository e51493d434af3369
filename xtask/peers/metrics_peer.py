"""Peer for prompt-metrics: DuckDB aggregating the same JSONL files (metrics/<set>/) with SQL
equivalent to agent_stats and model_comparison, timed end to end per query."""

import datetime
import json
import os

import duckdb

from _harness import Results, args, measure_runs

AGENT = "writer"

COLUMNS = ("{'agent': 'VARCHAR', 'model': 'VARCHAR', 'timestamp': 'TIMESTAMP', 'latency_ms': 'DOUBLE', "
           "'tokens_prompt': 'BIGINT', 'tokens_completion': 'BIGINT', 'cache_hit': 'BOOLEAN', "
           "'validation_passed': 'BOOLEAN', 'retry_count': 'INTEGER', 'error': 'VARCHAR', "
           "'response_length': 'BIGINT'}")

AGGREGATES = """
    count(*) AS total_calls,
    count(*) FILTER (WHERE validation_passed AND error IS NULL) AS successful_calls,
    avg(CASE WHEN validation_passed AND error IS NULL THEN 1 ELSE 0 END) AS success_rate,
    avg(latency_ms) AS avg_latency_ms,
    quantile_disc(latency_ms, 0.5) AS p50_latency_ms,
    quantile_disc(latency_ms, 0.95) AS p95_latency_ms,
    quantile_disc(latency_ms, 0.99) AS p99_latency_ms,
    avg(CASE WHEN validation_passed THEN 1 ELSE 0 END) AS validation_pass_rate,
    avg(retry_count) AS avg_retries,
    avg(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END) AS error_rate,
    avg(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS cache_hit_rate,
    avg(response_length) AS avg_response_length,
    sum(coalesce(tokens_prompt, 0) + coalesce(tokens_completion, 0)) AS total_tokens_used,
    sum(tokens_prompt) AS tokens_prompt,
    sum(tokens_completion) AS tokens_completion
"""


def main():
    a = args()
    results = Results(a.out, {"duckdb": duckdb.__version__})
    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    results.check("threads", threads)
    # The same window as ours: records of the last --days x 24 hours (timestamps are UTC, no offset).
    cutoff = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=a.days)).replace(tzinfo=None)
    for name in a.sets.split(","):
        files = os.path.join(a.data, "metrics", name, "metrics_*.jsonl")
        # DuckDB's fastest form: the columns the queries need, typed up front (read_json_auto's
        # schema sniffing and full-record parsing took about 5x longer on these files).
        source = f"read_ndjson('{files}', columns = {COLUMNS}, timestampformat = '%Y-%m-%dT%H:%M:%S.%f')"
        where = f"timestamp >= TIMESTAMP '{cutoff.isoformat(sep=' ')}'"
        agent_sql = f"SELECT {AGGREGATES} FROM {source} WHERE agent = '{AGENT}' AND {where}"
        model_sql = (f"SELECT model, {AGGREGATES} FROM {source} WHERE {where} "
                     "GROUP BY model ORDER BY total_calls DESC")
        runs = 3 if a.quick else 10
        results.run(f"duckdb_agent_stats_{name}", lambda: measure_runs(lambda: con.execute(agent_sql).fetchall(), runs))
        results.run(f"duckdb_model_comparison_{name}",
                    lambda: measure_runs(lambda: con.execute(model_sql).fetchall(), runs))
        try:
            results.check(f"agent_calls_{name}", con.execute(agent_sql).fetchone()[0])
            results.check(f"models_{name}", [[r[0], r[1]] for r in con.execute(model_sql).fetchall()])
        except Exception as exc:  # noqa: BLE001 - reported
            results.check(f"error_{name}", str(exc))
    results.write()


if __name__ == "__main__":
    main()

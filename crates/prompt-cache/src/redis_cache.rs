//! `RedisCache`: the cache over a Redis server (feature `redis`).

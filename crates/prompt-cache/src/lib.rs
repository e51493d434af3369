//! A response cache keyed on a SHA-256 of the whole request: memory LRU over a disk tier, and Redis.

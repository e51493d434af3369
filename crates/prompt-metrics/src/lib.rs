//! One metrics record per generation, appended to daily JSONL files, with aggregate queries.

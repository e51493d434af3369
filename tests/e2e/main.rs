//! End-to-end tests of the `prompt` binary: real processes, real files, a fake Ollama server on
//! loopback.

#![allow(clippy::unwrap_used)]

mod support;

mod batch;
mod breaker;
mod collector;
mod cost;
mod errors;
mod eval;
mod generate;
mod keys;
mod redis;
mod report;
mod serve;
mod streaming;
mod templates;

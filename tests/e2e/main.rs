//! End-to-end tests of the `prompt` binary.

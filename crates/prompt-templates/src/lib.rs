//! Versioned YAML prompt templates with Jinja bodies: load, render, lint.

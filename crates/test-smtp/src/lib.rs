//! A small SMTP server for tests.
#![forbid(unsafe_code)]

//! Tessera's SMTP transport: delivers the mail queue's messages with lettre.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

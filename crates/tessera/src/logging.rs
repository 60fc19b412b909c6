//! The server's log lines: text or JSON on standard error, each line of a request carrying that
//! request's id (`request_id`), so one request can be followed through the log.
//!
//! The id is added when a line is written (it is the request id current on the task that logs:
//! [`RequestId::current`]), not kept in a span: a span at the default level would be built for
//! every request, logged or not, and most requests log nothing.

use std::fmt;

use tessera_core::RequestId;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber: `log.filter`, `log.format`, standard error (with colours on a
/// terminal, for lines outside a request).
pub(crate) fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(with_quiet_crates(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json();
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithRequestId {
                    inner: json,
                    shape: Shape::Json,
                })
                .init();
        }
        LogFormat::Text => {
            let text = tracing_subscriber::fmt::format();
            builder
                .event_format(WithRequestId {
                    inner: text,
                    shape: Shape::Text,
                })
                .init();
        }
    }
}

/// The WebAuthn crates log what they refuse at error level, with the bytes they were sent: a
/// client could fill the log with its malformed passkey answers (and their public keys). The
/// server says why it refused an answer in its own words (the problem document, the audit log),
/// so they are silenced, unless the filter names them (to debug a ceremony).
fn with_quiet_crates(filter: &str) -> String {
    if filter.contains("webauthn") {
        filter.to_owned()
    } else {
        format!("{filter},webauthn_rs=off,webauthn_rs_core=off,webauthn_rs_proto=off")
    }
}

#[derive(Clone, Copy)]
enum Shape {
    /// `… message field=value` lines: the id is one more field at the end.
    Text,
    /// One JSON object per line: the id is its first member.
    Json,
}

/// A line format that adds `request_id` to the lines written while a request is served.
struct WithRequestId<F> {
    inner: F,
    shape: Shape,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(id) = RequestId::current() else {
            return self.inner.format_event(ctx, writer, event);
        };
        // The line is made whole first, so the id goes where the format wants it. (A request's
        // lines are then written without colours.)
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_id(&line, id.as_str(), self.shape))
    }
}

/// `line` with `request_id` added. A request id holds only `A-Z a-z 0-9 . _ : -`, so it needs no
/// quoting or escaping in either shape.
fn with_id(line: &str, id: &str, shape: Shape) -> String {
    match shape {
        Shape::Text => {
            let body = line.strip_suffix('\n').unwrap_or(line);
            format!("{body} request_id={id}\n")
        }
        Shape::Json => match line.strip_prefix('{') {
            Some(rest) if rest.starts_with('}') => format!("{{\"request_id\":\"{id}\"{rest}"),
            Some(rest) => format!("{{\"request_id\":\"{id}\",{rest}"),
            None => line.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_goes_at_the_end_of_a_text_line() {
        assert_eq!(
            with_id(
                "2026-11-29T22:00:00Z  INFO tessera: message user=1\n",
                "abc",
                Shape::Text
            ),
            "2026-11-29T22:00:00Z  INFO tessera: message user=1 request_id=abc\n"
        );
    }

    #[test]
    fn the_id_is_the_first_member_of_a_json_line() {
        let line = with_id(
            "{\"timestamp\":\"t\",\"level\":\"INFO\"}\n",
            "req-1",
            Shape::Json,
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["request_id"], "req-1");
        assert_eq!(parsed["level"], "INFO");
        assert_eq!(
            with_id("{}\n", "x", Shape::Json),
            "{\"request_id\":\"x\"}\n"
        );
    }
}

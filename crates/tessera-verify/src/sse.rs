//! A Server-Sent Events parser (the WHATWG HTML "event stream interpretation"), fed with chunks as
//! they arrive. Lines end with CRLF, LF or CR, also when a chunk boundary splits them; `data`
//! fields accumulate over several lines; `id` persists until changed; lines starting with `:` are
//! comments (the server's keep-alives); `retry` takes a number of milliseconds.

/// What the parser saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// A dispatched event.
    Event {
        /// The `event` field, or `message` when absent.
        event: String,
        /// The `data` lines joined with `\n`.
        data: String,
        /// The last event id in force when it was dispatched (empty: none).
        id: String,
    },
    /// A comment line, without its leading `:` and one space.
    Comment(String),
    /// A `retry` field: the reconnection delay the server asks for, in milliseconds.
    Retry(u64),
}

/// The stream broke a limit: it is treated as lost.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event or line is longer than {0} bytes")]
pub(crate) struct TooLarge(pub(crate) usize);

pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF at the start of this one belongs to it.
    after_cr: bool,
    first_line: bool,
    data: String,
    event: String,
    last_id: String,
    max_bytes: usize,
}

impl SseParser {
    /// A parser that refuses lines and events longer than `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            max_bytes,
        }
    }

    /// Feeds a chunk; complete items are pushed to `out`.
    pub(crate) fn feed(
        &mut self,
        mut chunk: &[u8],
        out: &mut Vec<SseItem>,
    ) -> Result<(), TooLarge> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_line_bytes(chunk)?;
                    break;
                }
                Some(at) => {
                    self.push_line_bytes(&chunk[..at])?;
                    let cr = chunk[at] == b'\r';
                    chunk = &chunk[at + 1..];
                    if cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, out)?;
                    // Keep the allocation for the next line.
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if self.line.len() + bytes.len() > self.max_bytes {
            return Err(TooLarge(self.max_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseItem>) -> Result<(), TooLarge> {
        let mut line = line;
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let text = String::from_utf8_lossy(line);
        if let Some(comment) = text.strip_prefix(':') {
            out.push(SseItem::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
            ));
            return Ok(());
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_bytes {
                    return Err(TooLarge(self.max_bytes));
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_id),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.push(SseItem::Retry(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.push(SseItem::Event {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            parser.feed(c, &mut out).unwrap();
        }
        out
    }

    fn event(event: &str, data: &str, id: &str) -> SseItem {
        SseItem::Event {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn events_comments_and_ids() {
        let items = parse_chunks(&[
            b": keep-alive\n\nevent: snapshot\nid: 7\ndata: {\"a\":1}\n\n",
            b"event:revocation\ndata:x\n\ndata: no id change\n\n",
        ]);
        assert_eq!(
            items,
            [
                SseItem::Comment("keep-alive".into()),
                event("snapshot", "{\"a\":1}", "7"),
                event("revocation", "x", "7"),
                event("message", "no id change", "7"),
            ]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let items = parse_chunks(&[b"data: one\ndata:two\ndata\ndata:  three\n\n"]);
        assert_eq!(items, [event("message", "one\ntwo\n\n three", "")]);
    }

    #[test]
    fn every_line_ending_and_any_chunk_boundary() {
        let text = b"\xEF\xBB\xBFid: 1\r\nevent: e\rdata: a\r\ndata: b\n\r\n:c\r\rdata: z\n\n";
        let whole = parse_chunks(&[text]);
        assert_eq!(
            whole,
            [
                event("e", "a\nb", "1"),
                SseItem::Comment("c".into()),
                event("message", "z", "1"),
            ]
        );
        // Split everywhere, including between CR and LF: the same items.
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), whole);
    }

    #[test]
    fn events_without_data_are_not_dispatched_but_ids_stick() {
        let items = parse_chunks(&[b"id: 5\nevent: snapshot\n\ndata: x\n\nid\ndata: y\n\n"]);
        assert_eq!(
            items,
            [event("message", "x", "5"), event("message", "y", "")]
        );
        // An id containing NUL is ignored.
        let items = parse_chunks(&[b"id: 1\n\nid: a\0b\ndata: x\n\n"]);
        assert_eq!(items, [event("message", "x", "1")]);
    }

    #[test]
    fn retry_takes_digits_only_and_unknown_fields_are_ignored() {
        let items = parse_chunks(&[b"retry: 1500\nretry: 1.5\nretry: \nfoo: bar\nretry\n\n"]);
        assert_eq!(items, [SseItem::Retry(1500)]);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        assert!(parse_chunks(&[b"data: half"]).is_empty());
        assert!(parse_chunks(&[b"data: half\n"]).is_empty());
    }

    #[test]
    fn limits_lines_and_events() {
        let mut parser = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(
            parser.feed(&[b'x'; 17], &mut out),
            Err(TooLarge(16)),
            "one long line"
        );
        let mut parser = SseParser::new(16);
        parser.feed(b"data: 12345\n", &mut out).unwrap();
        parser.feed(b"data: 12345\n", &mut out).unwrap();
        assert_eq!(
            parser.feed(b"data: 12345\n", &mut out),
            Err(TooLarge(16)),
            "many data lines"
        );
    }
}

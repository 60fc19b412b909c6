//! A received message and what a test reads from it: headers (RFC 2047 encoded words decoded)
//! and the text and HTML bodies (quoted-printable or base64 decoded, found inside
//! `multipart/*`). Enough MIME for what lettre writes; not a general MIME parser. Text is taken
//! as UTF-8 whatever the declared charset (lettre always writes UTF-8).

use base64::Engine as _;

/// A message the server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The envelope sender (`MAIL FROM`), without the angle brackets; empty for `<>`.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`), without the angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, its line ends as sent (CRLF), and
    /// without the final `.` line.
    pub data: String,
    /// The user name the client authenticated as, if it did.
    pub authenticated_as: Option<String>,
    /// Whether the message came over TLS (STARTTLS or implicit TLS).
    pub tls: bool,
}

impl Message {
    /// The value of the first header called `name` (any case), unfolded but not decoded.
    pub fn raw_header(&self, name: &str) -> Option<String> {
        header(head(&self.data), name)
    }

    /// The value of the first header called `name` (any case), unfolded and with its RFC 2047
    /// encoded words (`=?utf-8?b?…?=`) decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_header(name).map(|value| decode_words(&value))
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The first `text/plain` part, decoded, with `\n` line ends and without trailing ones
    /// (SMTP and MIME add line ends of their own: lettre ends a one-part message with an
    /// empty line). A message without a `Content-Type` is text/plain.
    pub fn text(&self) -> Option<String> {
        find_part(&self.data, "text/plain", 0)
    }

    /// The first `text/html` part, decoded, with `\n` line ends and without trailing ones.
    pub fn html(&self) -> Option<String> {
        find_part(&self.data, "text/html", 0)
    }
}

/// How deep multiparts may nest before the search gives up (a test's message is not hostile,
/// but a bound costs nothing).
const MAX_DEPTH: usize = 8;

/// The header section of an entity (up to the first empty line).
fn head(entity: &str) -> &str {
    split_entity(entity).0
}

/// An entity's header section and body, split at the first empty line.
fn split_entity(entity: &str) -> (&str, &str) {
    if let Some(body) = entity
        .strip_prefix("\r\n")
        .or_else(|| entity.strip_prefix('\n'))
    {
        return ("", body);
    }
    match (entity.find("\r\n\r\n"), entity.find("\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (&entity[..lf], &entity[lf + 2..]),
        (Some(crlf), _) => (&entity[..crlf], &entity[crlf + 4..]),
        (None, Some(lf)) => (&entity[..lf], &entity[lf + 2..]),
        (None, None) => (entity, ""),
    }
}

/// The first header `name` in a header section, unfolded (the line breaks of folding removed,
/// the whitespace after them kept) and trimmed.
fn header(head: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(value) = &mut found {
                value.push_str(line);
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim_end().eq_ignore_ascii_case(name)
        {
            found = Some(value.to_owned());
        }
    }
    found.map(|value| value.trim().to_owned())
}

/// A `Content-Type` value's media type (lowercase) and the parameter `param` (unquoted).
fn content_type(value: &str, param: &str) -> (String, Option<String>) {
    let mut pieces = value.split(';');
    let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let found = pieces.find_map(|piece| {
        let (key, value) = piece.split_once('=')?;
        key.trim().eq_ignore_ascii_case(param).then(|| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
                .to_owned()
        })
    });
    (media, found)
}

/// The first part of media type `wanted` in `entity` (searched depth-first through
/// `multipart/*`), decoded.
fn find_part(entity: &str, wanted: &str, depth: usize) -> Option<String> {
    let (head, body) = split_entity(entity);
    let declared = header(head, "Content-Type").unwrap_or_else(|| "text/plain".to_owned());
    let (media, boundary) = content_type(&declared, "boundary");
    if media.starts_with("multipart/") {
        if depth >= MAX_DEPTH {
            return None;
        }
        return parts(body, &boundary?)
            .into_iter()
            .find_map(|part| find_part(part, wanted, depth + 1));
    }
    if media != wanted {
        return None;
    }
    let encoding = header(head, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                // Shown as sent, so that a failing test says what came.
                .unwrap_or_else(|_| body.as_bytes().to_vec())
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
    Some(text.trim_end_matches('\n').to_owned())
}

/// The body parts of a multipart body with this boundary (RFC 2046 §5.1.1): what lies between
/// `--boundary` lines, until `--boundary--`.
fn parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut found = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = bare.strip_prefix(&delimiter) {
            let closing = rest.starts_with("--");
            if closing || rest.trim().is_empty() {
                if let Some(begin) = start {
                    found.push(&body[begin..offset]);
                }
                if closing {
                    return found;
                }
                start = Some(offset + line.len());
            }
        }
        offset += line.len();
    }
    found
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` is a byte, `=` at a line end is a soft line break.
fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'\r'), Some(b'\n')) => i += 3,
            (Some(b'\n'), _) => i += 2,
            (Some(&high), Some(&low)) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                out.push(hex(high) << 4 | hex(low));
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Decodes the RFC 2047 encoded words in a header value. Whitespace between two encoded words is
/// dropped, and the bytes of adjacent words are joined before being read as UTF-8 (an encoder
/// may split a character across words).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut gap = String::new();
    let mut rest = value;
    while !rest.is_empty() {
        if let Some((bytes, len)) = rest.strip_prefix("=?").and_then(encoded_word) {
            // Whitespace between two encoded words is not part of the text (RFC 2047 §6.2).
            if pending.is_empty() {
                out.push_str(&gap);
            }
            gap.clear();
            pending.extend(bytes);
            rest = &rest[2 + len..];
            continue;
        }
        let c = rest.chars().next().expect("rest is not empty");
        if c == ' ' || c == '\t' {
            gap.push(c);
        } else {
            flush(&mut out, &mut pending);
            out.push_str(&gap);
            gap.clear();
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut out, &mut pending);
    out.push_str(&gap);
    out
}

fn flush(out: &mut String, pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        out.push_str(&String::from_utf8_lossy(pending));
        pending.clear();
    }
}

/// One encoded word after its `=?`: `charset?B|Q?text?=`. Returns its bytes and the length
/// consumed (after the `=?`).
fn encoded_word(after: &str) -> Option<(Vec<u8>, usize)> {
    let (_charset, rest) = after.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if text.contains([' ', '\t']) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    let consumed = after.len() - rest.len() + end + 2;
    Some((bytes, consumed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> Message {
        Message {
            mail_from: String::new(),
            rcpt_to: vec![],
            data: data.to_owned(),
            authenticated_as: None,
            tls: false,
        }
    }

    #[test]
    fn encoded_words_are_decoded_and_joined() {
        assert_eq!(decode_words("plain text"), "plain text");
        assert_eq!(decode_words("=?utf-8?b?5L2g5aW9?="), "你好");
        // A character split across two words, folded onto two lines.
        assert_eq!(
            decode_words("=?utf-8?b?5L2g5Q==?= =?utf-8?b?pb0=?="),
            "你好"
        );
        assert_eq!(
            decode_words("=?UTF-8?Q?caf=C3=A9_au_lait?= ok"),
            "café au lait ok"
        );
        assert_eq!(decode_words("a =?utf-8?q?b?= c"), "a b c");
        assert_eq!(decode_words("=?broken"), "=?broken");
    }

    #[test]
    fn folded_headers_are_unfolded() {
        let m = message("Subject: one\r\n two\r\nTo: x@example.org\r\n\r\nbody\r\n");
        assert_eq!(m.raw_header("subject").as_deref(), Some("one two"));
        assert_eq!(m.raw_header("TO").as_deref(), Some("x@example.org"));
        assert_eq!(m.raw_header("Cc"), None);
        assert_eq!(m.text().as_deref(), Some("body"));
    }

    #[test]
    fn multipart_alternative_parts_are_decoded() {
        let m = message(concat!(
            "Content-Type: multipart/alternative;\r\n boundary=\"XYZ\"\r\n\r\n",
            "--XYZ\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            "caf=C3=A9 =\r\nnoir\r\n",
            "--XYZ\r\n",
            "Content-Type: text/html; charset=utf-8\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\n",
            "PHA+5L2g5aW9\r\nPC9wPg==\r\n",
            "--XYZ--\r\n",
        ));
        assert_eq!(m.text().as_deref(), Some("café noir"));
        assert_eq!(m.html().as_deref(), Some("<p>你好</p>"));
    }
}

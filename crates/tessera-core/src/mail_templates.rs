//! The mails of account recovery and email verification, and the notice sent to an account's old
//! address when the address changes: built-in templates in English (`en`) and simplified Chinese
//! (`zh`) that an operator may replace or add languages to, the choice of a language from an
//! `Accept-Language` header, and rendering to a [`MailMessage`].
//!
//! Each [`MailKind`] has three templates per language, named `<lang>/<kind>.subject.txt`,
//! `<lang>/<kind>.txt` and `<lang>/<kind>.html` (`docs/email-templates.md` is the operator's guide).
//! They are [MiniJinja](https://docs.rs/minijinja) templates with `trim_blocks` and
//! `lstrip_blocks` on; the HTML one is autoescaped. A variable a template uses but is not given is
//! an error, never an empty string, and [`MailTemplates::with_overrides`] renders every template
//! once with sample values so that a typo fails at startup rather than when a user asks for a code.
//!
//! The variables every template gets:
//!
//! | variable | kinds | value |
//! |---|---|---|
//! | `product` | all | the application's name |
//! | `username` | all | the account's username |
//! | `code` | recovery, verify_email | the one-time code |
//! | `link` | recovery, verify_email | a URL carrying the code |
//! | `expires_minutes` | recovery | minutes until the code expires |
//! | `expires_hours` | verify_email | hours until the code expires |
//! | `address` | verify_email | the address being verified |
//! | `new_address` | email_changed | the new address, masked (`a•••@example.org`); empty when removed |
//! | `removed` | email_changed | whether the address was removed rather than changed |
//! | `at` | email_changed | when, as a UTC time string |

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Output, State, UndefinedBehavior};
use serde_json::json;

use crate::error::Error;
use crate::mail::MailMessage;

/// Which mail to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailKind {
    /// The code (and link) that recovers an account: `code`, `link`, `expires_minutes`, besides
    /// `product` and `username`.
    Recovery,
    /// The code (and link) that proves an address is the user's: `code`, `link`,
    /// `expires_hours`, `address`, besides `product` and `username`.
    VerifyEmail,
    /// Sent to the old address when an account's address is changed or removed: `new_address`
    /// (masked by the caller; empty when removed), `removed`, `at` (UTC), besides `product` and
    /// `username`.
    EmailChanged,
}

impl MailKind {
    /// Every kind, in a fixed order.
    pub const ALL: [MailKind; 3] = [
        MailKind::Recovery,
        MailKind::VerifyEmail,
        MailKind::EmailChanged,
    ];

    /// The kind's name in template file names: `recovery`, `verify_email`, `email_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Recovery => "recovery",
            MailKind::VerifyEmail => "verify_email",
            MailKind::EmailChanged => "email_changed",
        }
    }

    /// The variables this kind's templates get (for error messages).
    fn variables(self) -> &'static str {
        match self {
            MailKind::Recovery => "product, username, code, link, expires_minutes",
            MailKind::VerifyEmail => "product, username, code, link, expires_hours, address",
            MailKind::EmailChanged => "product, username, new_address, removed, at",
        }
    }

    /// Values such as a caller passes, to try templates with. `email_changed` has two sets, so
    /// that both sides of `{% if removed %}` are tried.
    fn samples(self) -> Vec<serde_json::Value> {
        let common = |extra: serde_json::Value| {
            let mut vars = json!({ "product": "Tessera", "username": "alice" });
            if let (Some(vars), serde_json::Value::Object(extra)) = (vars.as_object_mut(), extra) {
                vars.extend(extra);
            }
            vars
        };
        match self {
            MailKind::Recovery => vec![common(json!({
                "code": "K7PD-3XQM",
                "link": "https://id.example.org/recover?code=K7PD-3XQM",
                "expires_minutes": 15,
            }))],
            MailKind::VerifyEmail => vec![common(json!({
                "code": "K7PD-3XQM",
                "link": "https://id.example.org/verify-email?code=K7PD-3XQM",
                "expires_hours": 24,
                "address": "alice@example.org",
            }))],
            MailKind::EmailChanged => vec![
                common(json!({
                    "new_address": "a•••@example.org",
                    "removed": false,
                    "at": "2026-11-30 03:03 UTC",
                })),
                common(json!({
                    "new_address": "",
                    "removed": true,
                    "at": "2026-11-30 03:03 UTC",
                })),
            ],
        }
    }

    fn from_file_stem(stem: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == stem)
    }
}

impl fmt::Display for MailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three templates of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }
}

fn template_name(language: &str, kind: MailKind, part: Part) -> String {
    format!("{language}/{kind}.{}", part.suffix())
}

/// The language sent when the client's preferences match none offered, and the one whose
/// templates are the reference.
const DEFAULT_LANGUAGE: &str = "en";

macro_rules! builtin {
    ($language:literal, $kind:ident, $file:literal) => {
        (
            $language,
            MailKind::$kind,
            [
                include_str!(concat!(
                    "../templates/mail/",
                    $language,
                    "/",
                    $file,
                    ".subject.txt"
                )),
                include_str!(concat!("../templates/mail/", $language, "/", $file, ".txt")),
                include_str!(concat!(
                    "../templates/mail/",
                    $language,
                    "/",
                    $file,
                    ".html"
                )),
            ],
        )
    };
}

/// The built-in templates: (language, kind, [subject, text, html]).
const BUILTIN: [(&str, MailKind, [&str; 3]); 6] = [
    builtin!("en", Recovery, "recovery"),
    builtin!("en", VerifyEmail, "verify_email"),
    builtin!("en", EmailChanged, "email_changed"),
    builtin!("zh", Recovery, "recovery"),
    builtin!("zh", VerifyEmail, "verify_email"),
    builtin!("zh", EmailChanged, "email_changed"),
];

/// The mail templates of every offered language, ready to render. Cheap to clone.
///
/// ```
/// use serde_json::json;
/// use tessera_core::{MailKind, MailTemplates};
///
/// let templates = MailTemplates::with_overrides([(
///     "en/recovery.subject.txt".to_owned(),
///     "{{ product }}: your recovery code".to_owned(),
/// )])
/// .unwrap();
/// let language = templates.negotiate(Some("zh-CN,zh;q=0.9,en;q=0.8"));
/// assert_eq!(language, "zh");
/// let vars = json!({
///     "product": "Example", "username": "alice", "code": "K7PD-3XQM",
///     "link": "https://id.example.org/recover?code=K7PD-3XQM", "expires_minutes": 15,
/// });
/// let mail = templates.render(MailKind::Recovery, "en", "alice@example.org", &vars)?;
/// assert_eq!(mail.subject, "Example: your recovery code");
/// assert!(mail.text.contains("K7PD-3XQM"));
/// # Ok::<(), tessera_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MailTemplates {
    inner: Arc<Inner>,
}

struct Inner {
    env: Environment<'static>,
    /// Canonical tags, sorted.
    languages: Vec<String>,
}

impl fmt::Debug for MailTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailTemplates")
            .field("languages", &self.inner.languages)
            .finish_non_exhaustive()
    }
}

impl Default for MailTemplates {
    fn default() -> Self {
        Self::builtin()
    }
}

impl MailTemplates {
    /// Only the built-in templates (`en` and `zh`).
    pub fn builtin() -> Self {
        // The built-in templates are checked by this module's tests.
        Self::with_overrides([]).expect("the built-in mail templates are valid")
    }

    /// The built-in templates with an operator's overrides, read from a templates directory as
    /// (relative path, source) pairs such as `("zh/recovery.html", "...")`, `/`-separated.
    ///
    /// The layout is `<lang>/<kind>.subject.txt`, `<lang>/<kind>.txt`, `<lang>/<kind>.html`, with
    /// `kind` one of `recovery`, `verify_email`, `email_changed` and `lang` a language tag such as
    /// `fr` or `pt-BR` (its case is normalized). A file replaces the built-in template of that name;
    /// a new language is offered once it has all three parts of every kind. Every template is then
    /// rendered once with sample values.
    ///
    /// Fails, naming every problem found with its file (and line): an unknown file name, a bad
    /// language tag, the same template given twice, a new language missing templates, a syntax
    /// error, a variable the kind does not have, or a subject that renders empty.
    pub fn with_overrides(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let mut sources: BTreeMap<(String, MailKind, Part), Cow<'static, str>> = BUILTIN
            .iter()
            .flat_map(|&(language, kind, parts)| {
                Part::ALL
                    .into_iter()
                    .zip(parts)
                    .map(move |(part, source)| ((language.to_owned(), kind, part), source.into()))
            })
            .collect();
        let builtin_languages: BTreeSet<String> = sources
            .keys()
            .map(|(language, ..)| language.clone())
            .collect();

        let mut problems = Vec::new();
        let mut given: BTreeMap<(String, MailKind, Part), String> = BTreeMap::new();
        for (path, source) in files {
            let key = match parse_path(&path) {
                Ok(key) => key,
                Err(why) => {
                    problems.push(format!("{path}: {why}"));
                    continue;
                }
            };
            if let Some(first) = given.get(&key) {
                problems.push(format!("{path}: the same template as {first}"));
                continue;
            }
            given.insert(key.clone(), path);
            // Files written on Windows: the mail transport adds the CRs itself.
            sources.insert(key, source.replace("\r\n", "\n").into());
        }

        let languages: BTreeSet<String> = sources
            .keys()
            .map(|(language, ..)| language.clone())
            .collect();
        for language in languages.difference(&builtin_languages) {
            let missing: Vec<String> = MailKind::ALL
                .into_iter()
                .flat_map(|kind| Part::ALL.map(|part| (kind, part)))
                .filter(|&(kind, part)| !sources.contains_key(&(language.clone(), kind, part)))
                .map(|(kind, part)| template_name(language, kind, part))
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{language}/: a new language needs all {} templates; missing {}",
                    MailKind::ALL.len() * Part::ALL.len(),
                    missing.join(", ")
                ));
            }
        }

        let mut env = environment();
        let mut compiled = Vec::new();
        for ((language, kind, part), source) in sources {
            let name = template_name(&language, kind, part);
            match env.add_template_owned(name, source) {
                Ok(()) => compiled.push((language, kind, part)),
                Err(err) => problems.push(describe(&err, kind)),
            }
        }
        for (language, kind, part) in compiled {
            let name = template_name(&language, kind, part);
            let Ok(template) = env.get_template(&name) else {
                continue;
            };
            for sample in kind.samples() {
                match template.render(Value::from(Serde(&sample))) {
                    Err(err) => {
                        problems.push(describe(&err, kind));
                        break;
                    }
                    Ok(subject) if part == Part::Subject && one_line(&subject).is_empty() => {
                        problems.push(format!("{name}: the subject renders empty"));
                        break;
                    }
                    Ok(_) => {}
                }
            }
        }

        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                env,
                languages: languages.into_iter().collect(),
            }),
        })
    }

    /// The offered languages, sorted: `en`, `zh` and any an operator added.
    pub fn languages(&self) -> Vec<String> {
        self.inner.languages.clone()
    }

    /// The best offered language for an `Accept-Language` header, or `en` when there is no header
    /// or nothing in it matches.
    ///
    /// Follows RFC 9110: q-values (absent means 1), `q=0` excludes, `*` stands for every language
    /// no other range names, equal q-values go to the range listed first. A range matches an
    /// offered language when either is a prefix of the other by whole subtags, ignoring case
    /// (`zh-CN` and `zh-Hant-TW` get `zh`; `pt` would get an offered `pt-BR`), an exact match
    /// counting before a prefix. Malformed entries are skipped; only the first 4 KiB and 64
    /// entries of a header are read.
    pub fn negotiate(&self, accept_language: Option<&str>) -> String {
        match accept_language {
            None => DEFAULT_LANGUAGE.to_owned(),
            Some(header) => self.best(parse_accept_language(header)).to_owned(),
        }
    }

    /// Renders a mail for `to` in `language` (or the offered language closest to it, as
    /// [`negotiate`](Self::negotiate) matches; `en` if none is) with the kind's variables (see
    /// [`MailKind`]). The subject is made one line (whitespace runs, newlines included, become one
    /// space); the HTML body is autoescaped. A missing variable is an [`Error::Internal`].
    pub fn render(
        &self,
        kind: MailKind,
        language: &str,
        to: &str,
        vars: &serde_json::Value,
    ) -> Result<MailMessage, Error> {
        let language = if is_language_range(language) {
            self.best(std::iter::once((language, 1000)))
        } else {
            DEFAULT_LANGUAGE
        };
        let context = Value::from(Serde(vars));
        let render = |part: Part| {
            let name = template_name(language, kind, part);
            self.inner
                .env
                .get_template(&name)
                .and_then(|template| template.render(context.clone()))
                .map_err(|err| Error::Internal(format!("mail template {}", describe(&err, kind))))
        };
        let subject = one_line(&render(Part::Subject)?);
        let mut text = render(Part::Text)?
            .trim_start_matches('\n')
            .trim_end()
            .to_owned();
        text.push('\n');
        let html = render(Part::Html)?;
        Ok(MailMessage {
            to: to.to_owned(),
            subject,
            text,
            html: Some(html),
            language: language.to_owned(),
        })
    }

    /// The offered language that the (range, q in thousandths) pairs, in header order, prefer.
    fn best<'r>(&self, ranges: impl Iterator<Item = (&'r str, u16)>) -> &str {
        #[derive(Clone, Copy)]
        struct Best {
            closeness: Closeness,
            q: u16,
            position: usize,
        }
        let offered = &self.inner.languages;
        let mut best: Vec<Option<Best>> = vec![None; offered.len()];
        for (position, (range, q)) in ranges.enumerate() {
            for (slot, tag) in best.iter_mut().zip(offered) {
                let Some(closeness) = Closeness::of(range, tag) else {
                    continue;
                };
                let better = match slot {
                    None => true,
                    Some(current) => {
                        closeness.rank() > current.closeness.rank()
                            || (closeness.rank() == current.closeness.rank() && q > current.q)
                    }
                };
                if better {
                    *slot = Some(Best {
                        closeness,
                        q,
                        position,
                    });
                }
            }
        }
        best.iter()
            .zip(offered)
            .filter_map(|(best, tag)| best.map(|best| (best, tag)))
            .filter(|(best, _)| best.q > 0)
            .max_by_key(|(best, tag)| {
                (
                    best.q,
                    std::cmp::Reverse(best.position),
                    best.closeness.level,
                    best.closeness.common,
                    tag.as_str() == DEFAULT_LANGUAGE,
                    std::cmp::Reverse(tag.as_str()),
                )
            })
            .map_or(DEFAULT_LANGUAGE, |(_, tag)| tag.as_str())
    }
}

/// How a language range matches an offered tag.
#[derive(Clone, Copy)]
struct Closeness {
    /// 3: the same tag; 2: the range is a prefix of the tag; 1: the tag is a prefix of the range
    /// (`zh-CN` for `zh`); 0: `*`.
    level: u8,
    /// Subtags in common.
    common: usize,
    /// Subtags of the range.
    range_len: usize,
}

impl Closeness {
    fn of(range: &str, tag: &str) -> Option<Self> {
        if range == "*" {
            return Some(Self {
                level: 0,
                common: 0,
                range_len: 0,
            });
        }
        let range_len = range.split('-').count();
        let tag_len = tag.split('-').count();
        let common = range
            .split('-')
            .zip(tag.split('-'))
            .take_while(|(r, t)| r.eq_ignore_ascii_case(t))
            .count();
        if common < range_len.min(tag_len) {
            return None;
        }
        let level = match range_len.cmp(&tag_len) {
            std::cmp::Ordering::Equal => 3,
            std::cmp::Ordering::Less => 2,
            std::cmp::Ordering::Greater => 1,
        };
        Some(Self {
            level,
            common,
            range_len,
        })
    }

    /// Orders the ranges matching one tag: an exact one first, then the longest range that is a
    /// prefix of the tag, then the shortest range the tag is a prefix of, then `*`.
    fn rank(self) -> (u8, isize) {
        let len = self.range_len as isize;
        match self.level {
            2 => (2, len),
            1 => (1, -len),
            level => (level, 0),
        }
    }
}

const MAX_HEADER_BYTES: usize = 4096;
const MAX_RANGES: usize = 64;

/// The well-formed (range, q in thousandths) entries of an `Accept-Language` header, in order.
fn parse_accept_language(header: &str) -> impl Iterator<Item = (&str, u16)> {
    let header = if header.len() > MAX_HEADER_BYTES {
        let mut end = MAX_HEADER_BYTES;
        while !header.is_char_boundary(end) {
            end -= 1;
        }
        // Drop the entry the cut went through.
        header[..end].rsplit_once(',').map_or("", |(kept, _)| kept)
    } else {
        header
    };
    header.split(',').take(MAX_RANGES).filter_map(parse_entry)
}

const OWS: [char; 2] = [' ', '\t'];

fn parse_entry(entry: &str) -> Option<(&str, u16)> {
    let mut parts = entry.split(';');
    let range = parts.next()?.trim_matches(OWS);
    if !is_language_range(range) {
        return None;
    }
    let q = match parts.next() {
        None => 1000,
        Some(weight) => {
            let weight = weight.trim_matches(OWS);
            let value = weight
                .strip_prefix("q=")
                .or_else(|| weight.strip_prefix("Q="))?;
            parse_qvalue(value)?
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some((range, q))
}

/// RFC 9110's qvalue: `0`, `0.` to `0.999`, `1`, `1.` to `1.000`; in thousandths.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match int {
        "0" => Some(
            frac.bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0, |q, digit| q * 10 + u16::from(digit - b'0')),
        ),
        "1" if frac.bytes().all(|b| b == b'0') => Some(1000),
        _ => None,
    }
}

/// RFC 4647's language-range: `*`, or 1–8 letters then subtags of 1–8 letters or digits.
fn is_language_range(range: &str) -> bool {
    range == "*"
        || range.split('-').enumerate().all(|(i, subtag)| {
            (1..=8).contains(&subtag.len())
                && subtag.bytes().all(|b| {
                    if i == 0 {
                        b.is_ascii_alphabetic()
                    } else {
                        b.is_ascii_alphanumeric()
                    }
                })
        })
}

/// A language tag for a templates directory in its usual case (`pt-BR`, `zh-Hant`), or `None`
/// when it is not one: 2–3 letters, then subtags of 2–8 letters or digits; at most 35 bytes.
fn canonical_language_tag(tag: &str) -> Option<String> {
    if tag.len() > 35 {
        return None;
    }
    let mut canonical = String::with_capacity(tag.len());
    for (i, subtag) in tag.split('-').enumerate() {
        let alphabetic = subtag.bytes().all(|b| b.is_ascii_alphabetic());
        let well_formed = if i == 0 {
            (2..=3).contains(&subtag.len()) && alphabetic
        } else {
            (2..=8).contains(&subtag.len()) && subtag.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !well_formed {
            return None;
        }
        if i > 0 {
            canonical.push('-');
        }
        match subtag.len() {
            // A region.
            2 if i > 0 && alphabetic => canonical.push_str(&subtag.to_ascii_uppercase()),
            // A script.
            4 if alphabetic => {
                canonical.push_str(&subtag[..1].to_ascii_uppercase());
                canonical.push_str(&subtag[1..].to_ascii_lowercase());
            }
            _ => canonical.push_str(&subtag.to_ascii_lowercase()),
        }
    }
    Some(canonical)
}

/// The template a relative path in a templates directory names.
fn parse_path(path: &str) -> Result<(String, MailKind, Part), String> {
    const LAYOUT: &str = "expected <lang>/<kind>.subject.txt, <lang>/<kind>.txt or \
                          <lang>/<kind>.html, kind being recovery, verify_email or email_changed";
    let Some((language, file)) = path.split_once('/') else {
        return Err(format!("not in a language directory ({LAYOUT})"));
    };
    let Some(language) = canonical_language_tag(language) else {
        return Err(format!(
            "{language:?} is not a language tag such as en, zh or pt-BR"
        ));
    };
    let (stem, part) = if let Some(stem) = file.strip_suffix(".subject.txt") {
        (stem, Part::Subject)
    } else if let Some(stem) = file.strip_suffix(".txt") {
        (stem, Part::Text)
    } else if let Some(stem) = file.strip_suffix(".html") {
        (stem, Part::Html)
    } else {
        return Err(format!("unknown file name ({LAYOUT})"));
    };
    let Some(kind) = MailKind::from_file_stem(stem) else {
        return Err(format!("unknown file name ({LAYOUT})"));
    };
    Ok((language, kind, part))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_formatter(format_value);
    env
}

/// MiniJinja's formatter, except that HTML escaping leaves `/` alone: the link stays readable in
/// the HTML source, as mail clients and their link checkers see it.
fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(text) if *state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            let mut start = 0;
            for (i, c) in text.char_indices() {
                let entity = match c {
                    '&' => "&amp;",
                    '<' => "&lt;",
                    '>' => "&gt;",
                    '"' => "&quot;",
                    '\'' => "&#x27;",
                    _ => continue,
                };
                out.write_str(&text[start..i])?;
                out.write_str(entity)?;
                start = i + 1;
            }
            out.write_str(&text[start..])?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// A rendering or syntax error as `file:line: what`, with the variables the kind has when one is
/// missing.
fn describe(err: &minijinja::Error, kind: MailKind) -> String {
    let mut message = match (err.name(), err.line()) {
        (Some(name), Some(line)) => format!("{name}:{line}: {}", err.kind()),
        (Some(name), None) => format!("{name}: {}", err.kind()),
        _ => err.kind().to_string(),
    };
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if err.kind() == minijinja::ErrorKind::UndefinedError {
        let _ = write!(message, " ({kind} templates get {})", kind.variables());
    }
    message
}

/// A subject on one line: trimmed, each run of whitespace or control characters one space.
fn one_line(subject: &str) -> String {
    subject
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kind: MailKind) -> serde_json::Value {
        kind.samples().remove(0)
    }

    fn overrides(files: &[(&str, &str)]) -> Result<MailTemplates, String> {
        MailTemplates::with_overrides(
            files
                .iter()
                .map(|&(path, source)| (path.to_owned(), source.to_owned())),
        )
    }

    /// Every template of `kind` in `language`, from the built-in English ones, with a marker.
    fn complete_language(language: &str) -> Vec<(String, String)> {
        BUILTIN
            .iter()
            .filter(|(builtin, ..)| *builtin == DEFAULT_LANGUAGE)
            .flat_map(|&(_, kind, parts)| {
                Part::ALL.into_iter().zip(parts).map(move |(part, source)| {
                    (
                        template_name(language, kind, part),
                        format!("[{language}] {source}"),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn is_send_sync_and_lists_the_builtin_languages() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<MailTemplates>();
        assert_eq!(MailTemplates::builtin().languages(), ["en", "zh"]);
    }

    #[test]
    fn every_kind_renders_in_every_builtin_language() {
        let templates = MailTemplates::builtin();
        for language in ["en", "zh"] {
            for kind in MailKind::ALL {
                for vars in kind.samples() {
                    let mail = templates
                        .render(kind, language, "alice@example.org", &vars)
                        .unwrap();
                    assert_eq!(mail.to, "alice@example.org");
                    assert_eq!(mail.language, language);
                    let html = mail.html.as_deref().unwrap();
                    assert!(!mail.subject.is_empty());
                    assert!(!mail.subject.contains(['\n', '\r']), "{}", mail.subject);
                    assert_eq!(mail.subject, mail.subject.trim());
                    assert!(mail.text.ends_with('\n') && !mail.text.ends_with("\n\n"));
                    assert!(
                        !mail.text.contains("\n\n\n"),
                        "{language} {kind}:\n{}",
                        mail.text
                    );
                    assert!(html.starts_with("<!DOCTYPE html>"));
                    assert!(!html.contains("{{") && !mail.text.contains("{{"));
                    for name in ["code", "link"] {
                        if let Some(value) = vars.get(name) {
                            let value = value.as_str().unwrap();
                            assert!(mail.text.contains(value), "{language} {kind} text: {name}");
                            assert!(html.contains(value), "{language} {kind} html: {name}");
                        }
                    }
                    assert!(
                        html.contains(r#"href="https://id.example.org/"#)
                            == (kind != MailKind::EmailChanged)
                    );
                    // The only link is the one given.
                    assert!(html.matches("href=").count() <= 1);
                    assert!(!html.contains("<img") && !html.contains("src="));
                }
            }
        }
    }

    #[test]
    fn the_texts_say_what_matters() {
        let templates = MailTemplates::builtin();
        let en = |kind, vars: &serde_json::Value| {
            templates.render(kind, "en", "a@example.org", vars).unwrap()
        };
        let recovery = en(MailKind::Recovery, &vars(MailKind::Recovery));
        assert!(
            recovery
                .text
                .contains("works once and expires in 15 minutes")
        );
        assert!(recovery.text.contains("your password has not been changed"));
        let mut one_minute = vars(MailKind::Recovery);
        one_minute["expires_minutes"] = json!(1);
        assert!(
            en(MailKind::Recovery, &one_minute)
                .text
                .contains("expires in 1 minute.")
        );

        let verify = en(MailKind::VerifyEmail, &vars(MailKind::VerifyEmail));
        assert!(verify.text.contains("alice@example.org"));
        assert!(verify.text.contains("expires in 24 hours"));

        let [changed, removed] = MailKind::EmailChanged.samples().try_into().unwrap();
        let changed = en(MailKind::EmailChanged, &changed);
        assert!(changed.subject.ends_with("was changed"));
        assert!(
            changed
                .text
                .contains("changed to a•••@example.org on 2026-11-30 03:03 UTC.")
        );
        assert!(
            changed
                .html
                .unwrap()
                .contains("<strong>a•••@example.org</strong>")
        );
        let removed = en(MailKind::EmailChanged, &removed);
        assert!(removed.subject.ends_with("was removed"));
        assert!(
            removed
                .text
                .contains("was removed on 2026-11-30 03:03 UTC.")
        );
        assert!(!removed.text.contains("changed to"));

        let zh = templates
            .render(
                MailKind::Recovery,
                "zh",
                "a@example.org",
                &vars(MailKind::Recovery),
            )
            .unwrap();
        assert_eq!(zh.subject, "Tessera 账号找回验证码");
        assert!(zh.text.contains("15 分钟内有效"));
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let mut vars = vars(MailKind::Recovery);
        vars["username"] = json!("<script>alert('x')</script>");
        vars["link"] = json!("https://id.example.org/recover?code=K7PD-3XQM&lang=en");
        let mail = MailTemplates::builtin()
            .render(MailKind::Recovery, "en", "a@example.org", &vars)
            .unwrap();
        let html = mail.html.unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"));
        assert!(
            html.contains(r#"href="https://id.example.org/recover?code=K7PD-3XQM&amp;lang=en""#)
        );
        assert!(mail.text.contains("<script>alert('x')</script>"));
        assert!(mail.text.contains("code=K7PD-3XQM&lang=en"));
    }

    #[test]
    fn subject_is_one_line() {
        let templates = overrides(&[(
            "en/recovery.subject.txt",
            "\n  Your {{ product }}\r\n   recovery\tcode \n\n",
        )])
        .unwrap();
        let mut vars = vars(MailKind::Recovery);
        vars["product"] = json!("Ex\nample");
        let mail = templates
            .render(MailKind::Recovery, "en", "a@example.org", &vars)
            .unwrap();
        assert_eq!(mail.subject, "Your Ex ample recovery code");
    }

    #[test]
    fn a_missing_variable_is_an_error_when_rendering() {
        let mut vars = vars(MailKind::Recovery);
        vars.as_object_mut().unwrap().remove("code");
        let err = MailTemplates::builtin()
            .render(MailKind::Recovery, "en", "a@example.org", &vars)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Internal(m) if m.contains("undefined value")),
            "{err}"
        );
    }

    #[test]
    fn render_falls_back_to_the_closest_language() {
        let templates = MailTemplates::builtin();
        let vars = vars(MailKind::Recovery);
        for (asked, used) in [
            ("zh-CN", "zh"),
            ("ZH", "zh"),
            ("fr", "en"),
            ("", "en"),
            ("zh_CN", "en"),
        ] {
            let mail = templates
                .render(MailKind::Recovery, asked, "a@example.org", &vars)
                .unwrap();
            assert_eq!(mail.language, used, "{asked}");
        }
    }

    #[test]
    fn negotiation() {
        let templates = MailTemplates::builtin();
        let cases = [
            (None, "en"),
            (Some(""), "en"),
            (Some("zh"), "zh"),
            (Some("zh-CN"), "zh"),
            (Some("zh-Hant-TW"), "zh"),
            (Some("ZH-cn"), "zh"),
            (Some("en-GB;q=0.5, zh;q=0.9"), "zh"),
            (Some("zh-CN,zh;q=0.9,en-US;q=0.8,en;q=0.7"), "zh"),
            (Some("en-US,en;q=0.9,zh;q=0.8"), "en"),
            (Some("fr"), "en"),
            (Some("fr, zh;q=0.1"), "zh"),
            (Some("fr;q=1.0, zh;q=0.001"), "zh"),
            (Some("*"), "en"),
            (Some("fr, *;q=0.5"), "en"),
            (Some("en;q=0, *"), "zh"),
            (Some("*, zh;q=0.5"), "en"),
            (Some("zh;q=0"), "en"),
            (Some("zh;q=0, en;q=0"), "en"),
            (Some("zh-TW;q=0, en;q=0.1"), "en"),
            (Some("zh-TW;q=0, zh-CN, en;q=0.5"), "zh"),
            (Some("zh;q=0.5, en;q=0.5"), "zh"),
            (Some("en;q=0.5, zh;q=0.5"), "en"),
            (Some("zh;Q=0.9, en;q=0.8"), "zh"),
            (Some("zh ; q=0.9 , en;q=0.8"), "zh"),
            // Garbage: each malformed entry is skipped.
            (Some("zh;q=2, en;q=0.1"), "en"),
            (Some("zh;q=0.5000, en;q=0.1"), "en"),
            (Some("zh;q=abc"), "en"),
            (Some("zh;level=1"), "en"),
            (Some("zh;q=0.9;q=0.8"), "en"),
            (Some("zh_CN"), "en"),
            (Some("中文, zh;q=0.2"), "zh"),
            (Some(";;;,,,==,-,zh-,q=1,zh;q=0.3"), "zh"),
            (Some("toolongsubtag-zh"), "en"),
            (Some("\u{0}\u{7f}"), "en"),
        ];
        for (header, expected) in cases {
            assert_eq!(templates.negotiate(header), expected, "{header:?}");
        }
    }

    #[test]
    fn negotiation_reads_a_bounded_part_of_a_huge_header() {
        let templates = MailTemplates::builtin();
        // Past the 64th entry: not read.
        let many = format!("{}zh", "fr, ".repeat(100));
        assert_eq!(templates.negotiate(Some(&many)), "en");
        let few = format!("{}zh", "fr, ".repeat(10));
        assert_eq!(templates.negotiate(Some(&few)), "zh");
        // Past 4 KiB: not read, and the entry the cut goes through is dropped.
        let long = format!("zh;q=0.1,{}, en", "x".repeat(1 << 20));
        assert_eq!(templates.negotiate(Some(&long)), "zh");
        let no_comma = "é".repeat(1 << 20);
        assert_eq!(templates.negotiate(Some(&no_comma)), "en");
    }

    #[test]
    fn a_file_replaces_the_builtin_one() {
        let templates = overrides(&[
            ("zh/recovery.subject.txt", "{{ product }} 的恢复码"),
            (
                "en/verify_email.txt",
                "Code: {{ code }}\r\nLink: {{ link }}\r\n",
            ),
        ])
        .unwrap();
        assert_eq!(templates.languages(), ["en", "zh"]);
        let zh = templates
            .render(
                MailKind::Recovery,
                "zh",
                "a@example.org",
                &vars(MailKind::Recovery),
            )
            .unwrap();
        assert_eq!(zh.subject, "Tessera 的恢复码");
        // The other parts stay built in.
        assert!(zh.text.contains("15 分钟内有效"));
        let en = templates
            .render(
                MailKind::VerifyEmail,
                "en",
                "a@example.org",
                &vars(MailKind::VerifyEmail),
            )
            .unwrap();
        assert_eq!(
            en.text,
            "Code: K7PD-3XQM\nLink: https://id.example.org/verify-email?code=K7PD-3XQM\n"
        );
        assert_eq!(en.subject, "Confirm your email address for Tessera");
    }

    #[test]
    fn unknown_files_and_bad_tags_are_refused() {
        for (path, expected) in [
            ("en/recovery.htm", "en/recovery.htm: unknown file name"),
            ("en/welcome.txt", "en/welcome.txt: unknown file name"),
            ("en/recovery.subject.html", "unknown file name"),
            ("en/sub/recovery.txt", "unknown file name"),
            ("recovery.txt", "recovery.txt: not in a language directory"),
            ("README.md", "not in a language directory"),
            ("fr_FR/recovery.txt", "\"fr_FR\" is not a language tag"),
            ("../recovery.txt", "not a language tag"),
            ("/en/recovery.txt", "not a language tag"),
            ("english/recovery.txt", "not a language tag"),
        ] {
            let err = overrides(&[(path, "x")]).unwrap_err();
            assert!(err.contains(expected), "{path}: {err}");
        }
        let err = overrides(&[("zh/recovery.txt", "a"), ("ZH/recovery.txt", "b")]).unwrap_err();
        assert!(
            err.contains("ZH/recovery.txt: the same template as zh/recovery.txt"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let err = overrides(&[(
            "zh/recovery.html",
            "<p>{{ username }}</p>\n<p>{% if code %}{{ code }}</p>\n",
        )])
        .unwrap_err();
        assert!(err.starts_with("zh/recovery.html:"), "{err}");
        assert!(err.contains("syntax error"), "{err}");
        let err = overrides(&[("en/recovery.txt", "ok\n\n{{ code }")]).unwrap_err();
        assert!(err.starts_with("en/recovery.txt:3: syntax error"), "{err}");
    }

    #[test]
    fn an_undefined_variable_is_refused_at_startup() {
        let err = overrides(&[("en/recovery.txt", "Hi {{ username }}\n{{ cod }}")]).unwrap_err();
        assert!(
            err.starts_with("en/recovery.txt:2: undefined value"),
            "{err}"
        );
        assert!(
            err.contains("recovery templates get product, username, code"),
            "{err}"
        );
        // A variable of another kind.
        let err = overrides(&[("en/email_changed.txt", "{{ code }}")]).unwrap_err();
        assert!(
            err.contains("en/email_changed.txt:1: undefined value"),
            "{err}"
        );
        // Inside the branch of an address removed.
        let err = overrides(&[(
            "en/email_changed.subject.txt",
            "{% if removed %}{{ new_adress }}{% else %}changed{% endif %}",
        )])
        .unwrap_err();
        assert!(
            err.contains("en/email_changed.subject.txt:1: undefined value"),
            "{err}"
        );
        // In a filter's argument, in a test.
        assert!(overrides(&[("en/recovery.txt", "{{ cod | upper }}")]).is_err());
        // `default` makes a variable optional, as docs/email-templates.md says.
        assert!(
            overrides(&[("en/recovery.txt", "{{ code }}{{ nickname | default('') }}")]).is_ok()
        );
        assert!(overrides(&[("en/recovery.txt", "{% if expires_min > 1 %}s{% endif %}")]).is_err());
        let err = overrides(&[("en/recovery.subject.txt", "{{ '' }}\n  ")]).unwrap_err();
        assert!(
            err.contains("en/recovery.subject.txt: the subject renders empty"),
            "{err}"
        );
    }

    #[test]
    fn a_new_language_needs_every_template() {
        let err = overrides(&[("fr/recovery.subject.txt", "Code {{ product }}")]).unwrap_err();
        assert!(
            err.starts_with("fr/: a new language needs all 9 templates; missing "),
            "{err}"
        );
        assert!(err.contains("fr/recovery.txt, fr/recovery.html, fr/verify_email.subject.txt"));
        assert!(err.contains("fr/email_changed.html"));
        assert!(!err.contains("fr/recovery.subject.txt"));

        let mut files = complete_language("fr");
        files.retain(|(path, _)| path != "fr/email_changed.txt");
        let err = MailTemplates::with_overrides(files).unwrap_err();
        assert_eq!(
            err,
            "fr/: a new language needs all 9 templates; missing fr/email_changed.txt"
        );
    }

    #[test]
    fn a_complete_new_language_is_offered() {
        let mut files = complete_language("pt-br");
        files.extend(complete_language("fr"));
        let templates = MailTemplates::with_overrides(files).unwrap();
        assert_eq!(templates.languages(), ["en", "fr", "pt-BR", "zh"]);
        assert_eq!(templates.negotiate(Some("fr-CA, en;q=0.9")), "fr");
        assert_eq!(templates.negotiate(Some("pt")), "pt-BR");
        assert_eq!(templates.negotiate(Some("pt-br")), "pt-BR");
        assert_eq!(templates.negotiate(Some("pt-PT, pt;q=0.8")), "pt-BR");
        assert_eq!(templates.negotiate(Some("de")), "en");
        let mail = templates
            .render(
                MailKind::Recovery,
                "fr",
                "a@example.org",
                &vars(MailKind::Recovery),
            )
            .unwrap();
        assert_eq!(mail.language, "fr");
        assert!(mail.subject.starts_with("[fr] "));
        assert!(mail.text.starts_with("[fr] ") && mail.text.contains("K7PD-3XQM"));
        // The clone shares the templates.
        assert_eq!(templates.clone().languages(), templates.languages());
    }

    #[test]
    fn language_tags() {
        for (tag, canonical) in [
            ("en", Some("en")),
            ("ZH", Some("zh")),
            ("pt-br", Some("pt-BR")),
            ("zh-hant-tw", Some("zh-Hant-TW")),
            ("es-419", Some("es-419")),
            ("de-CH-1996", Some("de-CH-1996")),
            ("e", None),
            ("engl", None),
            ("en-", None),
            ("en--us", None),
            ("en_US", None),
            ("x-private", None),
            ("*", None),
            ("", None),
        ] {
            assert_eq!(canonical_language_tag(tag).as_deref(), canonical, "{tag}");
        }
    }
}

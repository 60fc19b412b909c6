//! Placeholder until the real templates land (same API).
#![allow(missing_docs)]
use crate::error::Error;
use crate::mail::MailMessage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    Recovery,
    VerifyEmail,
    EmailChanged,
}

#[derive(Clone, Default)]
pub struct MailTemplates;

impl MailTemplates {
    pub fn builtin() -> Self {
        Self
    }
    pub fn with_overrides(_files: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        Ok(Self)
    }
    pub fn languages(&self) -> Vec<String> {
        vec!["en".into(), "zh".into()]
    }
    pub fn negotiate(&self, accept_language: Option<&str>) -> String {
        if accept_language.is_some_and(|a| a.starts_with("zh")) { "zh".into() } else { "en".into() }
    }
    pub fn render(&self, kind: MailKind, language: &str, to: &str, vars: &serde_json::Value) -> Result<MailMessage, Error> {
        Ok(MailMessage { to: to.into(), subject: format!("{kind:?}"), text: vars.to_string(), html: None, language: language.into() })
    }
}

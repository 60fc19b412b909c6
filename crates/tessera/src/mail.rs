//! The server's mail: the SMTP transport from `[email]`, and the operator's templates.

use std::path::Path;
use std::sync::Arc;

use tessera_core::{MailTemplates, MailTransport};

use crate::config::EmailSection;

/// The SMTP transport `[email]` describes; the key at fault and why when it cannot be built
/// (the message never repeats a password).
pub(crate) fn transport(
    email: &EmailSection,
) -> Result<Arc<dyn MailTransport>, (&'static str, String)> {
    let Some(url) = &email.smtp_url else {
        return Err(("email.smtp_url", "is not set".into()));
    };
    let Some(from) = &email.from else {
        return Err((
            "email.from",
            "is required with email.smtp_url: the sender, e.g. \"Example <no-reply@example.org>\""
                .into(),
        ));
    };
    let extra_roots = match &email.ca_file {
        Some(path) => ca_certificates(path).map_err(|why| ("email.ca_file", why))?,
        None => Vec::new(),
    };
    let settings = tessera_mail::SmtpSettings {
        url: url.clone().into(),
        password: email.smtp_password.clone().map(Into::into),
        from: from.clone(),
        timeout: email.timeout,
        extra_roots,
    };
    tessera_mail::SmtpTransport::new(settings)
        .map(|t| Arc::new(t) as Arc<dyn MailTransport>)
        .map_err(|e| (e.field(), e.problem().to_owned()))
}

/// The certificates (DER) of a PEM file.
fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certificates)
}

/// Most bytes a template file may have.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The templates of `dir` over the built-in ones: every `<lang>/<file>` in it (see
/// docs/email-templates.md). The message says which file is at fault.
pub(crate) fn templates(dir: &Path) -> Result<MailTemplates, String> {
    let mut files = Vec::new();
    let languages = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
    for language in languages {
        let language = language.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = language.path();
        if !path.is_dir() {
            return Err(format!(
                "{} is not a language directory (expected <lang>/<kind>.txt and friends)",
                path.display()
            ));
        }
        let lang = language.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&path)
            .map_err(|e| format!("cannot read the directory {}: {e}", path.display()))?
        {
            let file = file.map_err(|e| format!("reading {}: {e}", path.display()))?;
            let file_path = file.path();
            let meta = file
                .metadata()
                .map_err(|e| format!("reading {}: {e}", file_path.display()))?;
            if meta.len() > MAX_TEMPLATE_BYTES {
                return Err(format!(
                    "{} is larger than {MAX_TEMPLATE_BYTES} bytes",
                    file_path.display()
                ));
            }
            let source = std::fs::read_to_string(&file_path)
                .map_err(|e| format!("cannot read {}: {e}", file_path.display()))?;
            let name = file.file_name().to_string_lossy().into_owned();
            files.push((format!("{lang}/{name}"), source));
        }
    }
    MailTemplates::with_overrides(files)
}

//! Maps oci-client errors onto clb's error classes (and so onto exit codes).

use oci_client::errors::{OciDistributionError as E, OciErrorCode};

use crate::error::ClbError;

/// The request never got an HTTP answer (refused, reset, TLS handshake, timeout).
pub fn is_transport_error(e: &E) -> bool {
    matches!(e, E::RequestError(_))
}

/// Worth another try: the network or the server may do better in a moment.
pub fn is_retryable(e: &E) -> bool {
    match e {
        E::RequestError(_) | E::IoError(_) => true,
        E::ServerError { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        _ => false,
    }
}

pub fn map_oci_error(e: E, what: &str) -> ClbError {
    match e {
        E::AuthenticationFailure(m) => ClbError::AuthRefused(format!("{what}: {m}")),
        E::UnauthorizedError { url } => {
            ClbError::AuthRefused(format!("{what}: not authorized for {url}"))
        }
        E::ImageManifestNotFoundError(m) => ClbError::NotFound(format!("{what}: {m}")),
        E::DigestError(d) => ClbError::DigestMismatch {
            what: what.to_string(),
            expected: "the digest the registry announced".to_string(),
            actual: d.to_string(),
        },
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ClbError::AuthRefused(format!("{what}: {text}"))
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                ClbError::NotFound(format!("{what}: {text}"))
            } else {
                ClbError::Invalid(format!("{what}: registry said {text}"))
            }
        }
        E::ServerError { code, message, .. } => match code {
            401 | 403 => ClbError::AuthRefused(format!("{what}: HTTP {code}")),
            404 => ClbError::NotFound(format!("{what}: HTTP 404")),
            _ => ClbError::Unreachable(format!(
                "{what}: HTTP {code} {}",
                message.lines().next().unwrap_or("")
            )),
        },
        E::RequestError(r) => ClbError::Unreachable(format!(
            "{what}: {}",
            clb_command::one_line_deduplicated(&r)
        )),
        E::IoError(io) => ClbError::Unreachable(format!("{what}: {io}")),
        other => ClbError::Invalid(format!("{what}: {other}")),
    }
}

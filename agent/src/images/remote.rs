//! Talking to registries with oci-client: endpoints (mirrors, then the registry), credentials,
//! and the mapping of its errors onto `ImageError`.

use std::future::Future;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::reference::ImageRef;
use super::registries::{Endpoint, RegistriesConfig};
use super::{Credentials, ImageError};

/// A registry endpoint that answered, with what it takes to fetch more from it.
pub(crate) struct Session {
    pub client: Client,
    pub reference: Reference,
    pub endpoint: Endpoint,
}

fn client_for(ep: &Endpoint) -> Result<Client, ImageError> {
    let mut extra_root_certificates = Vec::new();
    let mut accept_invalid_certificates = false;
    if let Some(tls) = &ep.tls {
        accept_invalid_certificates = tls.insecure_skip_verify;
        if let Some(ca) = &tls.ca_file {
            let data = std::fs::read(ca).map_err(|source| ImageError::Io {
                context: format!("reading ca_file {ca} for {}", ep.host),
                source,
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        if tls.cert_file.is_some() || tls.key_file.is_some() {
            tracing::warn!(host = %ep.host, "registries.yaml: client certificates are not supported; ignoring cert_file/key_file");
        }
    }
    let config = ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates,
        extra_root_certificates,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    Client::try_from(config)
        .map_err(|e| ImageError::Pull(format!("{}: building a client: {e}", ep.host)))
}

/// Runs `op` against each endpoint for `image` in turn (each of its credentials in turn)
/// until one succeeds. Failures of every endpoint give the most telling error:
/// Unauthorized, then NotFound, then the last other failure.
pub(crate) async fn with_endpoints<T, F, Fut>(
    registries: &RegistriesConfig,
    image: &ImageRef,
    secrets: &[(String, Credentials)],
    op: F,
) -> Result<(T, Session), ImageError>
where
    F: Fn(Client, Reference, RegistryAuth) -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut errors: Vec<ImageError> = Vec::new();
    for ep in registries.endpoints(&image.registry, &image.repository) {
        let reference = image.at(&ep.host, &ep.repository);
        let mut creds = ep.credentials(secrets);
        if creds.is_empty() {
            creds.push(RegistryAuth::Anonymous);
        }
        for auth in creds {
            // A fresh client per credential: oci-client keeps the first auth it saw per host.
            let client = client_for(&ep)?;
            match op(client.clone(), reference.clone(), auth).await {
                Ok(v) => {
                    return Ok((
                        v,
                        Session {
                            client,
                            reference,
                            endpoint: ep,
                        },
                    ))
                }
                Err(e) => {
                    let e = map_error(&reference, e);
                    tracing::debug!(endpoint = %ep.host, mirror = ep.is_mirror, error = %e, "registry endpoint failed");
                    let unauthorized = matches!(e, ImageError::Unauthorized(_));
                    errors.push(e);
                    if !unauthorized {
                        break; // other credentials will not help here
                    }
                }
            }
        }
    }
    let pick = errors
        .iter()
        .position(|e| matches!(e, ImageError::Unauthorized(_)))
        .or_else(|| {
            errors
                .iter()
                .position(|e| matches!(e, ImageError::NotFound(_)))
        })
        .unwrap_or(errors.len().saturating_sub(1));
    if errors.is_empty() {
        return Err(ImageError::Pull(format!(
            "{}: no endpoint to pull from",
            image.normalized()
        )));
    }
    Err(errors.swap_remove(pick))
}

/// oci-client's errors → ours.
pub(crate) fn map_error(reference: &Reference, e: OciDistributionError) -> ImageError {
    let what = reference.whole();
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let msg = format!("{what}: {envelope} ({url})");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized(msg)
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                ImageError::NotFound(msg)
            } else {
                ImageError::Pull(msg)
            }
        }
        OciDistributionError::ImageManifestNotFoundError(m) => {
            ImageError::NotFound(format!("{what}: {m}"))
        }
        OciDistributionError::UnauthorizedError { url } => {
            ImageError::Unauthorized(format!("{what}: not authorized ({url})"))
        }
        OciDistributionError::AuthenticationFailure(m) => {
            ImageError::Unauthorized(format!("{what}: authentication failed: {m}"))
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            401 | 403 => ImageError::Unauthorized(format!("{what}: HTTP {code} ({url}) {message}")),
            404 => ImageError::NotFound(format!("{what}: HTTP 404 ({url}) {message}")),
            _ => ImageError::Pull(format!("{what}: HTTP {code} ({url}) {message}")),
        },
        OciDistributionError::RequestError(e) => {
            // Include the source chain: reqwest's top-level message is terse.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            ImageError::Pull(format!("{what}: {msg}"))
        }
        other => ImageError::Pull(format!("{what}: {other}")),
    }
}

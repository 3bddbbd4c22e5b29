//! Kubeconfigs the server writes: the admin's, and those of its own parts (the
//! controller-manager's, the scheduler's). One cluster, context and user all named
//! `default`, as k3s writes them, with every certificate embedded so the file works when
//! copied elsewhere (rendered by `agent::join::render_kubeconfig`, the one renderer; written
//! as YAML here, as k3s's).

use std::path::Path;

use crate::files::write_atomic;
use crate::pki::Pki;

/// Renders the kubeconfig YAML for the admin user against `server_url`.
pub fn render_admin(server_url: &str, pki: &Pki) -> anyhow::Result<String> {
    render(server_url, &pki.server_ca_pem, &pki.admin_cert_pem, &pki.admin_key_pem)
}

/// Renders the kubeconfig YAML of a client certificate against `server_url`.
pub fn render(server_url: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<String> {
    let json: serde_json::Value = serde_json::from_str(&agent::join::render_kubeconfig(server_url, ca_pem, cert_pem, key_pem))?;
    Ok(serde_yaml::to_string(&json)?)
}

/// Writes the kubeconfig to `path` with `mode`; it holds the admin key, hence the 0600 default.
pub fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    write_atomic(path, contents.as_bytes(), mode)?;
    tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "wrote kubeconfig");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    #[test]
    fn kubeconfig_names_everything_default_and_embeds_data() {
        let pki = Pki {
            server_ca_pem: "CA".into(),
            client_ca_pem: "CCA".into(),
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            admin_cert_pem: "CERT".into(),
            admin_key_pem: "KEY".into(),
            kubelet_client_cert_pem: String::new(),
            kubelet_client_key_pem: String::new(),
        };
        let text = render_admin("https://127.0.0.1:6443", &pki).unwrap();
        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "default");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            STANDARD.encode("CA")
        );
        assert_eq!(
            v["users"][0]["user"]["client-key-data"],
            STANDARD.encode("KEY")
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "default");
    }
}

//! The admin kubeconfig: one cluster, context and user all named `default`, as k3s writes
//! it, with every certificate embedded so the file works when copied elsewhere.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::files::write_atomic;
use crate::pki::Pki;

/// Renders the kubeconfig YAML for the admin user against `server_url`.
pub fn render_admin(server_url: &str, pki: &Pki) -> anyhow::Result<String> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "default",
            "cluster": {
                "server": server_url,
                "certificate-authority-data": STANDARD.encode(&pki.server_ca_pem),
            },
        }],
        "contexts": [{
            "name": "default",
            "context": { "cluster": "default", "user": "default" },
        }],
        "current-context": "default",
        "preferences": {},
        "users": [{
            "name": "default",
            "user": {
                "client-certificate-data": STANDARD.encode(&pki.admin_cert_pem),
                "client-key-data": STANDARD.encode(&pki.admin_key_pem),
            },
        }],
    });
    Ok(serde_yaml::to_string(&config)?)
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

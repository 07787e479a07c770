//! TLS for every listener (`--tls-cert`, `--tls-key`): one certificate and
//! key, PEM files, served by rustls with the aws-lc-rs provider (the one the
//! object-store client already links), and reloaded when the files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// The certificate chain and private key files, both PEM. The certificate
/// file holds the server certificate first, then any intermediates (as
/// nginx's `ssl_certificate` and the Collector's `cert_file`); the key file
/// holds one PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The certificate being served, swapped when the files change. Handshakes
/// read it through [`ResolvesServerCert`], so a reload takes effect for new
/// connections without touching open ones.
#[derive(Debug)]
pub(crate) struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last looked at, good or bad, so one bad update is
    /// logged once, not at every poll.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl Certificates {
    /// Reads and checks both files.
    ///
    /// # Errors
    /// A file that cannot be read, holds no PEM block of the right kind, or
    /// a key that does not belong to the certificate: each names the file.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert_pem, key_pem) = read(&files)?;
        let key = parse(&provider, &files, &cert_pem, &key_pem)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// A rustls server config over these certificates that offers `alpn`
    /// (`h2` for gRPC, which gRPC clients require; `h2` and `http/1.1` for
    /// the HTTP listeners). TLS 1.2 and 1.3 only, rustls's safe defaults.
    pub(crate) fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }

    /// Reads the files again and, if they changed since last looked at,
    /// serves the new certificate. `None`: unchanged; `Some(Err)`: changed
    /// but unusable (a half-written file, a key that does not match yet), so
    /// the previous certificate stays.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<()>> {
        let (cert_pem, key_pem) = match read(&self.files) {
            Ok(both) => both,
            // A file briefly missing while it is replaced: try next time,
            // and say it once.
            Err(e) => {
                let mut seen = self.seen.lock().expect("lock");
                if seen.0.is_empty() && seen.1.is_empty() {
                    return None;
                }
                *seen = (Vec::new(), Vec::new());
                return Some(Err(e));
            }
        };
        {
            let mut seen = self.seen.lock().expect("lock");
            if seen.0 == cert_pem && seen.1 == key_pem {
                return None;
            }
            *seen = (cert_pem.clone(), key_pem.clone());
        }
        Some(parse(&self.provider, &self.files, &cert_pem, &key_pem).map(|key| {
            *self.current.write().expect("lock") = Arc::new(key);
        }))
    }

    /// Polls the files every `every` until `stop`, logging each reload and
    /// each rejected update.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            match outcome {
                Ok(Some(Ok(()))) => tracing::info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "TLS certificate reloaded; new connections get the new one"
                ),
                Ok(Some(Err(e))) => tracing::warn!(
                    error = format!("{e:#}"),
                    "TLS certificate files changed but cannot be used; still serving the previous certificate"
                ),
                Ok(None) | Err(_) => {}
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("lock").clone()
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn read_one(p: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading TLS {what} {}", p.display()))
}

fn read(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((read_one(&files.cert, "certificate")?, read_one(&files.key, "key")?))
}

fn parse(
    provider: &CryptoProvider,
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey> {
    let cert = files.cert.display();
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        // The PEM parser's own message shows its marker as a byte array.
        .map_err(|_| {
            anyhow::anyhow!("TLS certificate {cert}: not PEM (no complete BEGIN/END CERTIFICATE block)")
        })?;
    anyhow::ensure!(!chain.is_empty(), "TLS certificate {cert}: no CERTIFICATE block");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("TLS key {}: no PEM private key", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .with_context(|| format!("TLS certificate {cert} and key {}: unusable together", files.key.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    /// A good update is served; a bad one (garbage, a key from another
    /// certificate) keeps the previous certificate and is reported once.
    #[test]
    fn test_reload_keeps_the_old_certificate_on_a_bad_update() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = pair("one.test");
        let files = write(dir.path(), &c1, &k1);
        let certs = Certificates::load(files.clone()).unwrap();
        let first = certs.current().cert[0].clone();
        assert!(certs.reload_if_changed().is_none(), "unchanged files are not reloaded");

        let (c2, k2) = pair("two.test");
        write(dir.path(), &c2, &k1);
        let err = certs.reload_if_changed().unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("unusable together"), "{err:#}");
        assert!(certs.reload_if_changed().is_none(), "the same bad files are reported once");
        assert_eq!(certs.current().cert[0], first);

        write(dir.path(), "garbage", &k2);
        let err = certs.reload_if_changed().unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("no CERTIFICATE block"), "{err:#}");
        assert_eq!(certs.current().cert[0], first);

        write(dir.path(), &c2, &k2);
        certs.reload_if_changed().unwrap().unwrap();
        assert_ne!(certs.current().cert[0], first);
    }

    #[test]
    fn test_load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = pair("x.test");
        let files = write(dir.path(), &c, "not a key");
        let err = format!("{:#}", Certificates::load(files).unwrap_err());
        assert!(err.contains("key.pem") && err.contains("no PEM private key"), "{err}");
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: dir.path().join("key.pem") };
        let err = format!("{:#}", Certificates::load(missing).unwrap_err());
        assert!(err.contains("nope.pem"), "{err}");
    }
}

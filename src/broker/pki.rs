//! The broker's own CA and serving certificate. The CA (key and certificate) lives in a Secret
//! of the operator's namespace so every replica and restart serves under the same CA; its
//! certificate alone is published to the namespaces that run EvalJobs.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::bootstrap::{self, Loaded};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CA_COMMON_NAME: &str = "byok-operator broker CA";

/// Errors setting up the broker's TLS.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("CA Secret {0} is missing ca.crt or ca.key, or they are not PEM text")]
    Incomplete(String),
}

/// The broker CA: its certificate (public) and the key that signs serving certificates.
pub struct BrokerCa {
    pub cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for BrokerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCa").finish_non_exhaustive()
    }
}

fn year() -> i32 {
    i32::from(jiff::Zoned::now().year())
}

/// The CA's parameters. Signing needs only its name and key, so these are rebuilt from
/// constants rather than parsed back from the stored certificate.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year() + 10, 1, 1);
    Ok(params)
}

impl BrokerCa {
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), key })
    }

    fn from_secret(name: &str, secret: &Secret) -> Result<Self, PkiError> {
        let get =
            |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).and_then(|b| String::from_utf8(b.0.clone()).ok());
        let (Some(cert_pem), Some(key_pem)) = (get(CA_CERT), get(CA_KEY)) else {
            return Err(PkiError::Incomplete(name.into()));
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::Incomplete(name.into()))?;
        Ok(Self { cert_pem, key })
    }

    /// The key that authenticates the results ConfigMaps the broker writes: derived from the CA
    /// key (held only by the operator), so a tenant who can write ConfigMaps cannot forge results.
    pub fn results_mac(&self) -> super::results::ResultsMac {
        super::results::ResultsMac::derive(&self.key.serialize_der())
    }

    /// A serving certificate for `names` (DNS names or IP addresses), as (cert PEM chain, key PEM).
    pub fn issue_serving(&self, names: &[String]) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "byok-broker");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.not_before = rcgen::date_time_ymd(year() - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year() + 2, 1, 1);
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem()))
    }

    /// The CA Secret: key and certificate, also as `tls.*` for tools that expect those.
    fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        let (cert, key) = (self.cert_pem.clone().into_bytes(), self.key.serialize_pem().into_bytes());
        let data = [
            (CA_CERT.to_string(), ByteString(cert.clone())),
            (CA_KEY.to_string(), ByteString(key.clone())),
            ("tls.crt".to_string(), ByteString(cert)),
            ("tls.key".to_string(), ByteString(key)),
        ];
        bootstrap::secret(bootstrap::meta(namespace, name, "broker-ca"), Some("kubernetes.io/tls"), data.into())
    }

    /// Reads the CA Secret, or generates and stores a CA when there is none.
    pub async fn load_or_create(client: &Client, namespace: &str, name: &str) -> Result<Self, PkiError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let generate = async {
            let ca = Self::generate()?;
            let secret = ca.to_secret(namespace, name);
            Ok((ca, secret))
        };
        match bootstrap::load_or_create(&api, name, |s| Self::from_secret(name, s), generate).await? {
            Loaded::Found(ca) => Ok(ca),
            Loaded::Created(ca, _) => {
                tracing::info!(secret = name, namespace, "generated the broker CA");
                Ok(ca)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_certificate_chains_to_the_ca() {
        let ca = BrokerCa::generate().expect("ca");
        let (chain, key) = ca.issue_serving(&["byok-broker.byok-system.svc".into(), "127.0.0.1".into()]).expect("cert");
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&ca.cert_pem));
        assert!(key.contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_ca_secret_reads_back_as_the_ca() {
        let ca = BrokerCa::generate().expect("ca");
        let secret = ca.to_secret("ops", "byok-broker-ca");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let back = BrokerCa::from_secret("byok-broker-ca", &secret).expect("reads");
        assert_eq!(back.cert_pem, ca.cert_pem);
        assert_eq!(back.key.serialize_pem(), ca.key.serialize_pem());
        assert!(BrokerCa::from_secret("x", &Secret::default()).is_err());
    }
}

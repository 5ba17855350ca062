//! The cluster connection and the namespaces a command works in.

use k8s_openapi::NamespaceResourceScope;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};

use super::args::{GlobalArgs, Output};
use super::error::{Error, api_code};
use crate::crd::{ByokKey, EvalJob};

/// What every command that talks to the cluster needs.
pub struct Ctx {
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else "default".
    pub namespace: String,
    pub operator_namespace: String,
    pub output: Output,
}

impl Ctx {
    pub async fn new(g: &GlobalArgs) -> Result<Self, Error> {
        let options = KubeConfigOptions { context: g.context.clone(), ..Default::default() };
        let config = match (&g.kubeconfig, &g.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &options).await.map_err(|e| Error::Config(e.to_string()))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| Error::Config(e.to_string()))?,
            (None, None) => Config::infer().await.map_err(|e| Error::Config(e.to_string()))?,
        };
        let namespace = g.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { client, namespace, operator_namespace: g.operator_namespace.clone(), output: g.output.format() })
    }

    /// An API of the command's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn keys(&self) -> Api<ByokKey> {
        self.api()
    }

    /// Reads a ByokKey, saying how to find the right name when it does not exist.
    pub async fn get_key(&self, name: &str) -> Result<ByokKey, Error> {
        match self.keys().get(name).await {
            Ok(k) => Ok(k),
            Err(e) if api_code(&e) == Some(404) => Err(self.key_not_found(name)),
            Err(e) => Err(Error::kube(format!("reading ByokKey {name}"))(e)),
        }
    }

    pub fn key_not_found(&self, name: &str) -> Error {
        Error::NotFound(format!(
            "ByokKey {name} not found in namespace {}; list keys with `kubectl byok list -n {}` (or -A for every namespace)",
            self.namespace, self.namespace
        ))
    }

    /// Reads an EvalJob, saying how to find the right name when it does not exist.
    pub async fn get_evaljob(&self, name: &str) -> Result<EvalJob, Error> {
        match self.api::<EvalJob>().get(name).await {
            Ok(ej) => Ok(ej),
            Err(e) if api_code(&e) == Some(404) => Err(self.evaljob_not_found(name)),
            Err(e) => Err(Error::kube(format!("reading EvalJob {name}"))(e)),
        }
    }

    pub fn evaljob_not_found(&self, name: &str) -> Error {
        Error::NotFound(format!(
            "EvalJob {name} not found in namespace {}; list them with `kubectl get evaljobs -n {}`",
            self.namespace, self.namespace
        ))
    }
}

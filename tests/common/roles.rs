//! Clients acting in the roles of docs/security.md, with real RBAC and real tokens.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use super::TestEnv;

/// A client authenticated as ServiceAccount `name` of the test namespace.
pub async fn as_service_account(env: &TestEnv, name: &str) -> Client {
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": name } })).expect("sa");
    sas.patch(name, &PatchParams::apply("byok-tests").force(), &Patch::Apply(&sa)).await.expect("sa");
    let token = sas
        .create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token")
        .status
        .expect("status")
        .token;
    let kubeconfig = Kubeconfig::read().expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    config.auth_info = AuthInfo { token: Some(token.into()), ..AuthInfo::default() };
    Client::try_from(config).expect("client")
}

/// The evaluator: may run EvalJobs with the namespace's keys and read ByokKeys (prefix only);
/// nothing else (no Secrets, pods, ConfigMaps or tokens).
pub async fn evaluator(env: &TestEnv) -> Client {
    let pp = PatchParams::apply("byok-tests").force();
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "evaluator" },
        "rules": [
            { "apiGroups": ["launchgate.ai"], "resources": ["evaljobs"], "verbs": ["create", "get", "list", "watch"] },
            { "apiGroups": ["launchgate.ai"], "resources": ["byokkeys"], "verbs": ["get", "list", "watch"] }
        ]
    }))
    .expect("role");
    Api::<Role>::namespaced(env.client.clone(), &env.ns)
        .patch("evaluator", &pp, &Patch::Apply(&role))
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "evaluator" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "evaluator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "evaluator", "namespace": env.ns }]
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns)
        .patch("evaluator", &pp, &Patch::Apply(&binding))
        .await
        .expect("binding");
    as_service_account(env, "evaluator").await
}

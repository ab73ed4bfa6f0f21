//! What the executor and the deployer share: API errors as backend errors, and the namespaces
//! they create.

use gitops_core::backend::BackendError;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::KubernetesBackend;
use crate::names::MANAGED_BY;

/// A failed call to the API server, saying what it was for.
pub(crate) fn api_error(what: &str, e: kube::Error) -> BackendError {
    BackendError::failed_with(what, e)
}

impl KubernetesBackend {
    /// Creates `ns` labelled as ours with `labels`, unless it exists (then it is left as it is:
    /// a deploy's record of what it applied lives in its annotations). Returns whether it made
    /// it.
    pub(crate) async fn ensure_namespace(
        &self,
        ns: &str,
        labels: serde_json::Value,
    ) -> Result<bool, BackendError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let exists = api
            .get_opt(ns)
            .await
            .map_err(|e| api_error(&format!("reading namespace {ns}"), e))?;
        if exists.is_some() {
            return Ok(false);
        }
        let mut labels = labels;
        labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))
                .map_err(|e| BackendError::failed_with(format!("namespace {ns}"), e))?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(true),
            // Made meanwhile by another stage.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(api_error(&format!("creating namespace {ns}"), e)),
        }
    }
}

//! The objects a stage is made of: its Job, and the Secret holding its secrets.

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::BTreeMap;

use gitops_core::backend::{BackendError, StageContext};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::OUTPUT_PATH;
use crate::KubernetesBackend;
use crate::names::{self, JOB, MANAGED_BY, PIPELINE, RUN, STAGE};

/// The stage's namespace: `with.namespace`, else its environment's, else its pipeline's.
pub(super) fn namespace(ctx: &StageContext) -> Result<String, BackendError> {
    if let Some(ns) = names::namespace_param(ctx)? {
        return Ok(ns);
    }
    Ok(match &ctx.environment {
        Some(env) => names::environment_namespace(&env.name),
        None => format!(
            "gitops-{}",
            names::dns_label(&ctx.run.pipeline, 56, "pipeline")
        ),
    })
}

impl KubernetesBackend {
    /// The Job for the stage.
    pub(super) fn job(
        &self,
        ctx: &StageContext,
        name: &str,
    ) -> Result<serde_json::Value, BackendError> {
        let image = match ctx.param_str("image")? {
            Some(i) if !i.is_empty() => i.to_owned(),
            _ => {
                return Err(InvalidParameters(format!(
                    "stage \"{}\" has no `with.image`, which the k8s backend needs",
                    ctx.stage
                )));
            }
        };
        let command = match ctx.params().strings("command")? {
            Some(argv) if argv.is_empty() => {
                return Err(InvalidParameters(
                    "`with.command` must not be empty".to_owned(),
                ));
            }
            Some(argv) => argv,
            None => match &ctx.command {
                Some(run) => vec!["sh".into(), "-c".into(), run.to_string()],
                None => {
                    return Err(InvalidParameters(format!(
                        "stage \"{}\" has neither `run` nor `with.command`",
                        ctx.stage
                    )));
                }
            },
        };
        let mut env: Vec<serde_json::Value> = ctx
            .gitops_env()
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        env.extend(ctx.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        for (k, v) in ctx.params().string_map("env")?.unwrap_or_default() {
            env.push(json!({"name": k, "value": v}));
        }
        // Secrets never in the Job's spec, which anyone who may read Jobs reads: a Secret of
        // the Job's name holds them (see `create_secret`).
        env.extend(
            ctx.secrets.keys().map(
                |k| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}}),
            ),
        );
        env.push(json!({"name": "GITOPS_OUTPUT", "value": OUTPUT_PATH}));
        let labels = json!({
            MANAGED_BY.0: MANAGED_BY.1,
            RUN: names::label_value(&ctx.run.id),
            STAGE: names::label_value(&ctx.stage),
            PIPELINE: names::label_value(&ctx.run.pipeline),
            JOB: name,
        });
        let mut spec = json!({
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": self.ttl_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": self.stop_grace.as_secs(),
                    "containers": [{
                        "name": "stage",
                        "image": image,
                        "command": command,
                        "env": env,
                        "terminationMessagePath": OUTPUT_PATH,
                        "terminationMessagePolicy": "File",
                    }],
                },
            },
        });
        if let Some(timeout) = ctx.timeout {
            spec["activeDeadlineSeconds"] = json!(timeout.as_secs_f64().ceil().max(1.0) as i64);
        }
        Ok(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
    }
}

/// The Secret holding a stage's secrets, named and labelled as its Job.
pub(super) fn stage_secret(
    ctx: &StageContext,
    name: &str,
    labels: &serde_json::Value,
) -> Result<Secret, BackendError> {
    let data: BTreeMap<String, k8s_openapi::ByteString> = ctx
        .secrets
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                k8s_openapi::ByteString(v.expose().as_bytes().to_vec()),
            )
        })
        .collect();
    let labels: BTreeMap<String, String> = serde_json::from_value(labels.clone())
        .map_err(|e| BackendError::failed_with("the Secret's labels", e))?;
    Ok(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    })
}

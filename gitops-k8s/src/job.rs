//! A stage as a Kubernetes Job (see the crate docs).

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::AsyncBufReadExt;
use gitops_core::backend::{BackendError, Completion, Executor, LogStream, StageContext};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};
use serde_json::json;

use crate::KubernetesBackend;
use crate::names::{self, JOB, MANAGED_BY, PIPELINE, RUN, STAGE};
use crate::wait::{self, Selector, WaitError};

/// Where the container writes its outputs: its termination message.
const OUTPUT_PATH: &str = "/dev/termination-log";

pub(crate) fn api_error(what: &str, e: kube::Error) -> BackendError {
    BackendError::Failed(format!("{what}: {e}"))
}

/// The stage's namespace: `with.namespace`, else its environment's, else its pipeline's.
fn namespace(ctx: &StageContext) -> Result<String, BackendError> {
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

/// `key=value` lines (the termination message) as outputs.
fn outputs(message: &str) -> BTreeMap<String, String> {
    message
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

impl KubernetesBackend {
    /// Creates `ns` labelled as ours with `labels`, unless it exists (then it is left as it is:
    /// a deploy's record of what it applied lives in its annotations).
    pub(crate) async fn ensure_namespace(
        &self,
        ns: &str,
        labels: serde_json::Value,
    ) -> Result<(), BackendError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let exists = api
            .get_opt(ns)
            .await
            .map_err(|e| api_error(&format!("reading namespace {ns}"), e))?;
        if exists.is_some() {
            return Ok(());
        }
        let mut labels = labels;
        labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))
                .map_err(|e| BackendError::Failed(format!("namespace {ns}: {e}")))?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            // Made meanwhile by another stage.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(api_error(&format!("creating namespace {ns}"), e)),
        }
    }

    /// The Job for the stage.
    fn job(&self, ctx: &StageContext, name: &str) -> Result<serde_json::Value, BackendError> {
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

    /// Streams the log of the Job's pod once it runs, until it ends. Returns why the pod cannot
    /// start when it is stuck (an image that cannot be pulled, a bad container config).
    async fn follow_log(&self, pods: &Api<Pod>, job: &str, ctx: &StageContext) -> Option<String> {
        let selector = format!("{JOB}={job}");
        let started = wait::until(
            pods,
            Selector::Labels(&selector),
            None,
            &ctx.cancel,
            |p: &Pod| {
                let status = p.status.as_ref()?;
                if let Some(stuck) = cannot_start(status) {
                    return Some(Err(stuck));
                }
                let phase = status.phase.as_deref()?;
                (phase != "Pending")
                    .then(|| p.metadata.name.clone().map(Ok))
                    .flatten()
            },
            |_| None,
            || None,
        )
        .await;
        let pod = match started {
            Ok(Ok(pod)) => pod,
            Ok(Err(stuck)) => return Some(stuck),
            Err(_) => return None,
        };
        let params = LogParams {
            follow: true,
            ..LogParams::default()
        };
        let Ok(stream) = pods.log_stream(&pod, &params).await else {
            return None;
        };
        let mut lines = stream.lines();
        while let Some(Ok(line)) = futures_util::StreamExt::next(&mut lines).await {
            ctx.log.line(LogStream::Stdout, &line);
        }
        None
    }
}

/// Why a pending pod will not start by itself: a container waiting for a reason that does not
/// pass (`ErrImagePull: ...`).
fn cannot_start(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<String> {
    const STUCK: [&str; 6] = [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    ];
    status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK.contains(&reason).then(|| match &waiting.message {
            Some(m) => format!("{reason}: {m}"),
            None => reason.to_owned(),
        })
    })
}

impl KubernetesBackend {
    /// Deletes a Job with its pods (foreground propagation); one already gone is fine.
    async fn delete_job(&self, jobs: &Api<Job>, ns: &str, name: &str) -> Result<(), BackendError> {
        match jobs.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(api_error(&format!("deleting Job {ns}/{name}"), e)),
        }
    }
}

/// How a Job ended.
struct Ended {
    succeeded: bool,
    reason: String,
}

impl Ended {
    fn deleted() -> Ended {
        Ended {
            succeeded: false,
            reason: "the Job was deleted while it ran".to_owned(),
        }
    }
}

#[async_trait]
impl Executor for KubernetesBackend {
    /// Runs the stage as a Job and waits for it (see the crate docs). Its secrets go in a
    /// Secret of the Job's name, made before the Job and deleted after it.
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let ns = namespace(&ctx)?;
        let name = names::unique_dns_label(
            &format!("gitops-{}-{}-{}", ctx.run.id, ctx.stage, ctx.attempt),
            52,
            "gitops-stage",
        );
        let job = self.job(&ctx, &name)?;
        let env_label = ctx
            .environment
            .as_ref()
            .map(|e| json!({names::ENVIRONMENT: names::label_value(&e.name)}))
            .unwrap_or_else(|| json!({}));
        self.ensure_namespace(&ns, env_label).await?;
        if ctx.secrets.is_empty() {
            return self.run_job(&ctx, &ns, &name, job).await;
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = stage_secret(&ctx, &name, &job["metadata"]["labels"])?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| api_error(&format!("creating Secret {ns}/{name}"), e))?;
        let ran = self.run_job(&ctx, &ns, &name, job).await;
        let deleted = match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(api_error(&format!("deleting Secret {ns}/{name}"), e)),
        };
        let completion = ran?;
        deleted?;
        Ok(completion)
    }

    /// Deletes, with their pods, the Jobs of `run_id` in any namespace that a crashed process
    /// left running, and their Secrets.
    async fn abandon(&self, run_id: &str) -> Result<usize, BackendError> {
        let selector = format!("{RUN}={}", names::label_value(run_id));
        let all: Api<Job> = Api::all(self.client.clone());
        let left = all
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("listing the run's Jobs", e))?;
        let mut removed = 0;
        for job in left.items {
            let (Some(ns), Some(name)) = (job.metadata.namespace, job.metadata.name) else {
                continue;
            };
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
            self.delete_job(&jobs, &ns, &name).await?;
            removed += 1;
        }
        let all: Api<Secret> = Api::all(self.client.clone());
        let left = all
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("listing the run's Secrets", e))?;
        for secret in left.items {
            let (Some(ns), Some(name)) = (secret.metadata.namespace, secret.metadata.name) else {
                continue;
            };
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => removed += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(api_error(&format!("deleting Secret {ns}/{name}"), e)),
            }
        }
        Ok(removed)
    }

    /// `image`, `command`, `env` and `namespace` (see the crate docs).
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::executor()
    }
}

/// The Secret holding a stage's secrets, named and labelled as its Job.
fn stage_secret(
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
        .map_err(|e| BackendError::Failed(format!("the Secret's labels: {e}")))?;
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

impl KubernetesBackend {
    /// Creates the stage's Job `name` in `ns`, follows it to its end and reads its result.
    async fn run_job(
        &self,
        ctx: &StageContext,
        ns: &str,
        name: &str,
        job: serde_json::Value,
    ) -> Result<Completion, BackendError> {
        let (ns, name) = (ns.to_owned(), name.to_owned());
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let job: Job = serde_json::from_value(job)
            .map_err(|e| BackendError::Failed(format!("the Job does not serialise: {e}")))?;
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| api_error(&format!("creating Job {ns}/{name}"), e))?;

        let log = self.follow_log(&pods, &name, ctx);
        let ended = wait::until(
            &jobs,
            Selector::Name(&name),
            None,
            &ctx.cancel,
            |j: &Job| {
                let conditions = j.status.as_ref()?.conditions.as_ref()?;
                conditions.iter().find_map(|c| {
                    (c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed")).then(
                        || Ended {
                            succeeded: c.type_ == "Complete",
                            reason: match (&c.reason, &c.message) {
                                (Some(r), Some(m)) => format!("{r}: {m}"),
                                (Some(r), None) => r.clone(),
                                (None, Some(m)) => m.clone(),
                                (None, None) => c.type_.clone(),
                            },
                        },
                    )
                })
            },
            |_| Some(Ended::deleted()),
            || Some(Ended::deleted()),
        );
        // The Job's end decides; its log gets a moment to drain (a pod that never ran has none).
        // A pod that cannot start ends the stage: Kubernetes would wait for it forever.
        tokio::pin!(ended, log);
        let mut log_done = false;
        let ended = tokio::select! {
            e = &mut ended => e,
            stuck = &mut log => {
                log_done = true;
                match stuck {
                    Some(why) => {
                        self.delete_job(&jobs, &ns, &name).await?;
                        return Ok(Completion::failure(
                            None,
                            format!("the Job's pod cannot start: {why}"),
                        ));
                    }
                    None => ended.await,
                }
            }
        };
        if !log_done {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut log).await;
        }
        let ended = match ended {
            Ok(e) => e,
            Err(WaitError::Cancelled) => {
                self.delete_job(&jobs, &ns, &name).await?;
                return Err(BackendError::Cancelled);
            }
            // A wait without a deadline does not time out.
            Err(WaitError::TimedOut) => {
                return Err(BackendError::Failed(
                    "the wait for the Job ended without a result".to_owned(),
                ));
            }
            Err(WaitError::Api(e)) => {
                return Err(api_error(&format!("watching Job {ns}/{name}"), e));
            }
        };
        // The pod's exit code and termination message.
        let selector = format!("{JOB}={name}");
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("listing the Job's pods", e))?;
        let terminated = list.items.iter().find_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.clone())
        });
        let exit_code = terminated.as_ref().map(|t| t.exit_code);
        let message = terminated
            .as_ref()
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        let mut completion = if ended.succeeded {
            Completion::success()
        } else {
            let what = match exit_code {
                Some(code) => format!("exit code {code} ({})", ended.reason),
                None => ended.reason.clone(),
            };
            Completion::failure(exit_code, what)
        };
        completion.outputs = outputs(&message);
        Ok(completion)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn termination_message_lines_are_outputs() {
        let o = super::outputs("image=app:1\nurl=http://x/?a=b\nnoise\n=skipped\n");
        assert_eq!(o.len(), 2);
        assert_eq!(o["url"], "http://x/?a=b");
    }
}

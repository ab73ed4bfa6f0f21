//! A stage's Job run to its end: created, its pod's log followed, waited for with a watch,
//! deleted when cancelled or stuck, and its result read from the pod.

use std::collections::BTreeMap;

use futures_util::AsyncBufReadExt;
use gitops_core::backend::{BackendError, Completion, LogStream, StageContext};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};

use crate::KubernetesBackend;
use crate::api::api_error;
use crate::names::JOB;
use crate::wait::{self, Selector, WaitError};

/// `key=value` lines (the termination message) as outputs.
fn outputs(message: &str) -> BTreeMap<String, String> {
    message
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
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

    /// The end a Job's conditions say it reached, if any (`Complete` or `Failed`).
    fn of(job: &Job) -> Option<Ended> {
        let conditions = job.status.as_ref()?.conditions.as_ref()?;
        conditions.iter().find_map(|c| {
            (c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed")).then(|| Ended {
                succeeded: c.type_ == "Complete",
                reason: match (&c.reason, &c.message) {
                    (Some(r), Some(m)) => format!("{r}: {m}"),
                    (Some(r), None) => r.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => c.type_.clone(),
                },
            })
        })
    }
}

/// What waiting for a Job came to.
enum Waited {
    /// It ended.
    Ended(Ended),
    /// Its pod cannot start, and would wait forever: why.
    Stuck(String),
}

impl KubernetesBackend {
    /// Creates the stage's Job `name` in `ns`, follows it to its end and reads its result.
    pub(super) async fn run_job(
        &self,
        ctx: &StageContext,
        ns: &str,
        name: &str,
        job: serde_json::Value,
    ) -> Result<Completion, BackendError> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let job: Job = serde_json::from_value(job)
            .map_err(|e| BackendError::failed_with("the Job does not serialise", e))?;
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| api_error(&format!("creating Job {ns}/{name}"), e))?;
        let ended = match self.wait_for_end(ctx, &jobs, &pods, name).await {
            Ok(Waited::Ended(ended)) => ended,
            Ok(Waited::Stuck(why)) => {
                self.delete_job(&jobs, ns, name).await?;
                return Ok(Completion::failure(
                    None,
                    format!("the Job's pod cannot start: {why}"),
                ));
            }
            Err(WaitError::Cancelled) => {
                self.delete_job(&jobs, ns, name).await?;
                return Err(BackendError::Cancelled);
            }
            // A wait without a deadline does not time out.
            Err(WaitError::TimedOut) => {
                return Err(BackendError::failed(
                    "the wait for the Job ended without a result".to_owned(),
                ));
            }
            Err(WaitError::Api(e)) => {
                return Err(api_error(&format!("watching Job {ns}/{name}"), e));
            }
        };
        self.job_result(&pods, name, ended).await
    }

    /// Waits for the Job's end while its pod's log streams to the stage's log.
    async fn wait_for_end(
        &self,
        ctx: &StageContext,
        jobs: &Api<Job>,
        pods: &Api<Pod>,
        name: &str,
    ) -> Result<Waited, WaitError> {
        let log = self.follow_log(pods, name, ctx);
        let ended = wait::until(
            jobs,
            Selector::Name(name),
            None,
            ctx.cancellation(),
            Ended::of,
            |_| Some(Ended::deleted()),
            || Some(Ended::deleted()),
        );
        // The Job's end decides; its log gets a moment to drain (a pod that never ran has none).
        // A pod that cannot start ends the stage: Kubernetes would wait for it forever.
        tokio::pin!(ended, log);
        tokio::select! {
            e = &mut ended => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut log).await;
                e.map(Waited::Ended)
            }
            stuck = &mut log => match stuck {
                Some(why) => Ok(Waited::Stuck(why)),
                None => ended.await.map(Waited::Ended),
            },
        }
    }

    /// The stage's completion: the Job's end, with its pod's exit code and outputs (from the
    /// termination message).
    async fn job_result(
        &self,
        pods: &Api<Pod>,
        name: &str,
        ended: Ended,
    ) -> Result<Completion, BackendError> {
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

    /// Streams the log of the Job's pod once it runs, until it ends. Returns why the pod cannot
    /// start when it is stuck (an image that cannot be pulled, a bad container config).
    async fn follow_log(&self, pods: &Api<Pod>, job: &str, ctx: &StageContext) -> Option<String> {
        let selector = format!("{JOB}={job}");
        let started = wait::until(
            pods,
            Selector::Labels(&selector),
            None,
            ctx.cancellation(),
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

    /// Deletes a Job with its pods (foreground propagation) and waits until they are gone, so
    /// that nothing of the stage runs on; one already gone is fine.
    pub(super) async fn delete_job(
        &self,
        jobs: &Api<Job>,
        ns: &str,
        name: &str,
    ) -> Result<(), BackendError> {
        match jobs.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(api_error(&format!("deleting Job {ns}/{name}"), e)),
        }
        // The pods get their grace period to stop; the API server a moment more.
        let patience = self.stop_grace + std::time::Duration::from_secs(30);
        let deadline = tokio::time::Instant::now().checked_add(patience);
        // Not the stage's token: it may be the cancellation that brought us here.
        let unstoppable = gitops_core::backend::Cancellation::new();
        match wait::until_gone(jobs, name, deadline, &unstoppable).await {
            Ok(()) => Ok(()),
            Err(WaitError::Api(e)) => Err(api_error(&format!("watching Job {ns}/{name} go"), e)),
            Err(WaitError::TimedOut | WaitError::Cancelled) => Err(BackendError::failed(format!(
                "Job {ns}/{name} was still being deleted {}s after it was asked to stop",
                patience.as_secs()
            ))),
        }
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

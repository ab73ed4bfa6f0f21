//! A stage that gets a task of its own (one with templates to render, an environment, or a
//! retry policy or timeout): its first context, made when it starts.

use std::sync::Arc;
use std::time::Duration;

use super::progress::Progress;
use super::state::Shared;
use crate::backend::{EnvironmentTarget, StageContext};
use crate::config::{Environment, Retry};
use crate::expr::StageStatus;
use crate::plan::layout::{ENVIRONMENT, POLICY, RENDERS};

/// A stage started in a task of its own.
pub(super) struct Job {
    pub index: usize,
    pub backend: usize,
    pub target: usize,
    pub ctx: StageContext,
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub shared: Arc<Shared>,
}

impl Job {
    /// Stage `i` as it starts: its `env` and `with` rendered (from the outputs of its needs in
    /// `states`), its environment and that environment's secrets, its policy.
    pub fn new(shared: &Arc<Shared>, states: &Progress, i: usize) -> Job {
        let layout = &shared.pipeline.layout;
        let planned = &shared.pipeline.stages[i];
        // What every stage's context has; the rest is filled in below.
        let mut ctx = shared.plain_context(i);
        if layout.has(i, RENDERS) {
            let source = &planned.source;
            let rt = shared.expr_context(
                states,
                i,
                StageStatus {
                    needs_succeeded: true,
                    ..Default::default()
                },
            );
            ctx.env.extend(
                source
                    .env
                    .iter()
                    .map(|(k, t)| (k.clone(), rt.render(&t.template))),
            );
            if let Some(settings) = &planned.environment_settings {
                for (k, v) in settings.with.iter() {
                    ctx.with.insert(k.clone(), rt.render_json(v));
                }
            }
            for (k, v) in &source.with {
                ctx.with.insert(k.clone(), rt.render_json(v));
            }
        }
        if layout.has(i, ENVIRONMENT) {
            if let (Some(name), Some(config)) =
                (&planned.environment, &planned.details().environment_config)
            {
                let event = &shared.info.event;
                let settings = planned.environment_settings.as_deref();
                if let Some(secrets) = shared.environment_secrets.get(config) {
                    ctx.secrets
                        .extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                ctx.environment = Some(Box::new(
                    EnvironmentTarget::new(
                        name.clone(),
                        config.clone(),
                        event.version().map(|v| v.to_string()),
                    )
                    .with_pull_request(
                        event
                            .pull_request()
                            .filter(|_| settings.is_some_and(|s| s.per_pull_request))
                            .map(|pr| pr.number),
                    )
                    .with_policy(settings.map(Environment::policy).unwrap_or_default()),
                ));
            }
        }
        let timeout = if layout.has(i, POLICY) {
            planned.source.timeout
        } else {
            None
        };
        ctx.timeout = timeout;
        Job {
            index: i,
            backend: layout.backend(i),
            target: layout.target(i),
            ctx,
            retry: if layout.has(i, POLICY) {
                planned.source.retry.as_deref().cloned()
            } else {
                None
            },
            timeout,
            shared: shared.clone(),
        }
    }
}

//! [`Lazy`]: a backend made when a stage first needs it, for applications that register every
//! backend they know whether or not a pipeline uses it (a Docker engine or a cluster that may not
//! be there).

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use super::{BackendError, BoxError, Completion, Deployer, Executor, ParamSchema, StageContext};

type Make<B> = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<B, BoxError>> + Send>> + Send + Sync + 'static,
>;

/// A backend made by `make` at its first use. When making it fails, that stage fails with
/// [`BackendError::Unavailable`], its message that of the error and its source the error itself,
/// and the next stage tries again.
///
/// Its parameters must be known before it is made (configs are checked before any stage
/// runs): they are those given to [`with_params`](Self::with_params), else an open schema.
pub struct Lazy<B> {
    make: Make<B>,
    backend: tokio::sync::OnceCell<B>,
    run_params: ParamSchema,
    deploy_params: ParamSchema,
}

impl<B> std::fmt::Debug for Lazy<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("made", &self.backend.initialized())
            .finish()
    }
}

impl<B: Send + Sync + 'static> Lazy<B> {
    /// A backend that `make` makes when first needed (its error says what is missing).
    pub fn new<F, Fut, E>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Lazy {
            make: Box::new(move || {
                let made = make();
                Box::pin(async move { made.await.map_err(Into::into) })
            }),
            backend: tokio::sync::OnceCell::new(),
            run_params: ParamSchema::open(),
            deploy_params: ParamSchema::open(),
        }
    }

    /// Declares the backend's parameters: `run` those of its `run` stages
    /// ([`Executor::params`]), `deploy` those of its deployments ([`Deployer::params`]).
    pub fn with_params(mut self, run: ParamSchema, deploy: ParamSchema) -> Self {
        self.run_params = run;
        self.deploy_params = deploy;
        self
    }

    /// The backend, made now if it was not yet.
    pub async fn get(&self) -> Result<&B, BackendError> {
        self.backend
            .get_or_try_init(|| (self.make)())
            .await
            .map_err(|e| BackendError::unavailable_with(e.to_string(), e))
    }
}

#[async_trait]
impl<B: Executor> Executor for Lazy<B> {
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.get().await?.execute(ctx).await
    }

    async fn abandon(&self, run_id: &str) -> Result<usize, BackendError> {
        self.get().await?.abandon(run_id).await
    }

    fn params(&self) -> ParamSchema {
        self.run_params.clone()
    }
}

#[async_trait]
impl<B: Deployer> Deployer for Lazy<B> {
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.get().await?.deploy(ctx).await
    }

    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.get().await?.stop(ctx).await
    }

    fn params(&self) -> ParamSchema {
        self.deploy_params.clone()
    }
}

//! The terraform backend's two faces: an executor (plan, validate, or a command in the
//! initialised working directory) and a deployer (a workspace per environment: plan, apply exactly
//! that plan, outputs; stop = destroy).

mod deployer;
mod executor;
mod settings;
mod workdir;

use gitops_core::backend::{BackendError, Completion};

use crate::cli::TerraformError;
#[cfg(test)]
pub(crate) use settings::KEYS;

fn to_backend(e: TerraformError) -> BackendError {
    match e {
        TerraformError::Cancelled => BackendError::Cancelled,
        TerraformError::NotFound { .. } => BackendError::unavailable_with(e.to_string(), e),
        e => BackendError::failed_with(e.to_string(), e),
    }
}

/// A terraform error as the stage's failure (a located, readable message), or the backend error
/// it is (cancelled, no binary).
fn failure(e: TerraformError) -> Result<Completion, BackendError> {
    match e {
        TerraformError::Cancelled | TerraformError::NotFound { .. } => Err(to_backend(e)),
        e => Ok(Completion::failure(None, e.to_string())),
    }
}

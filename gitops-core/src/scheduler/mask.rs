//! What a backend returned, as a stage's result: every secret of the run masked in its outputs
//! and messages (an error's causes too), since what it returns is shown (report, events) and
//! recorded (ledger).

use std::collections::BTreeMap;

use super::report::StageResult;
use crate::backend::{BackendError, Completion, ErrorChain, Outcome};
use crate::secret::Masker;

/// What a backend returned, with every secret masked in its outputs and messages: what it
/// returns is shown (report, events) and recorded (ledger). An error whose message or causes
/// hold a secret becomes a [`BackendError::Failed`] of the whole chain, masked.
pub(crate) fn masked(
    returned: Result<Completion, BackendError>,
    masker: &Masker,
) -> Result<Completion, BackendError> {
    if masker.is_empty() {
        return returned;
    }
    match returned {
        Ok(mut completion) => {
            masker.mask_values(&mut completion.outputs);
            if let Outcome::Failure { message, .. } = &mut completion.outcome {
                masker.mask_in_place(message);
            }
            Ok(completion)
        }
        Err(BackendError::Cancelled) => Err(BackendError::Cancelled),
        Err(e) => {
            let mut text = ErrorChain(&e).to_string();
            if masker.mask_in_place(&mut text) {
                Err(BackendError::failed(text))
            } else {
                Err(e)
            }
        }
    }
}

/// A stage's result from what its backend returned, secrets masked.
pub(super) fn classify(
    returned: Result<Completion, BackendError>,
    masker: &Masker,
) -> (StageResult, BTreeMap<String, String>) {
    let returned = masked(returned, masker);
    match returned {
        Ok(Completion {
            outcome: Outcome::Success,
            outputs,
        }) => (StageResult::Success, outputs),
        Ok(Completion {
            outcome: Outcome::Failure { exit_code, message },
            outputs,
        }) => (StageResult::Failure { message, exit_code }, outputs),
        Err(e) => {
            let message = match e {
                BackendError::Cancelled => "the backend cancelled the stage".to_owned(),
                e => ErrorChain(&e).to_string(),
            };
            (
                StageResult::Failure {
                    message,
                    exit_code: None,
                },
                BTreeMap::new(),
            )
        }
    }
}

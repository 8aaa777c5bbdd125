//! Small synchronisation helpers every module may use; imports nothing of the
//! engine's, so it sits below all of them.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A poisoned lock's data is still consistent here (no invariant spans a
/// panic), so it is used rather than propagated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

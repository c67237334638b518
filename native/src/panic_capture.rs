//! Backend code that may panic (a driver library loaded lazily, a kernel that fails to
//! compile) runs through [`catch_panic`], so the CLI reports an error instead of crashing.

use std::panic::{self, AssertUnwindSafe};

/// Runs `work`, turning a panic into its message. The default panic hook is silenced while
/// `work` runs, so the message is printed once, by the caller, as an error.
pub fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|info| {
        tracing::debug!("backend panicked: {info}");
    }));
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    panic::set_hook(previous_hook);
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the backend panicked without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_values_and_panic_messages() {
        assert_eq!(catch_panic(|| 41 + 1), Ok(42));
        assert_eq!(
            catch_panic(|| -> u8 { panic!("no driver for {}", "cuda") }),
            Err("no driver for cuda".to_string())
        );
        assert_eq!(
            catch_panic(|| -> u8 { panic!("static message") }),
            Err("static message".to_string())
        );
    }
}

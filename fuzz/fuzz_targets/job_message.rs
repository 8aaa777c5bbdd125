//! Any bytes as an SQS message body: parsing must never panic, and a
//! rejection must always name a job id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = std::str::from_utf8(data) {
        if let Err(rejection) = ferry_worker::job::parse(body, "fuzz-message-id") {
            assert!(!rejection.job_id.is_empty());
        }
    }
});

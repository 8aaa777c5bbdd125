//! Any URL: the guard must never panic, and must never let a URL through
//! whose IP-literal host is not public.
#![no_main]

use ferry_engine::source::guard::{AddressPolicy, is_public};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(url) = text.parse::<ferry_engine::source::Url>() else { return };
    let verdict = AddressPolicy::default().check_url(&url);
    if let Some(host) = url.host_str() {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            assert_eq!(verdict.is_ok(), is_public(ip) && matches!(url.scheme(), "http" | "https"));
        }
    }
});

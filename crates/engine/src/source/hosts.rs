//! The per-host connection cap: at most N source requests to one `host:port`
//! at once, across every transfer of an engine.
//!
//! A [`HostSlot`] is taken before a request is sent and held until its body
//! has been read or dropped (not during the part's upload); a part keeps its
//! slot across its retries, a stream from the probe to its end. Part
//! tasks take their slot *before* they reserve part memory (the probe's answer
//! holds one before part 1's memory too), so whoever holds part memory never
//! waits for a host: the slot holders read, the memory holders read or upload,
//! and neither can wait for the other in a circle.
//!
//! The key is the requested URL's host and port; a redirect to another host
//! still counts against the host that was asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hosts remembered before idle ones are forgotten.
const REMEMBERED_HOSTS: usize = 256;

/// One request's place among the requests to its host; frees it when dropped.
/// Empty when there is no cap.
#[derive(Debug, Default)]
pub struct HostSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// The slots of each host, created on first use.
#[derive(Debug)]
pub(crate) struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSlots {
    pub(crate) fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a free slot for `url`'s host.
    pub(crate) async fn take(&self, url: &Url) -> HostSlot {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let semaphore = {
            let mut hosts = crate::sync::lock(&self.hosts);
            if hosts.len() >= REMEMBERED_HOSTS && !hosts.contains_key(&key) {
                // A host nobody holds or waits for has all its slots free:
                // forgetting it loses nothing.
                hosts.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
            }
            Arc::clone(
                hosts
                    .entry(key)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
            )
        };
        // The semaphore is never closed, so acquiring cannot fail.
        HostSlot {
            _permit: semaphore.acquire_owned().await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn url(text: &str) -> Url {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_host_has_at_most_its_slots_and_other_hosts_are_not_held_up() {
        let slots = HostSlots::new(2);
        let a = url("http://a.example/x");
        let _first = slots.take(&a).await;
        let second = slots.take(&url("http://A.example:80/y")).await;
        let third = tokio::time::timeout(Duration::from_millis(50), slots.take(&a)).await;
        assert!(third.is_err(), "a third request to the same host must wait");
        let other = tokio::time::timeout(
            Duration::from_millis(50),
            slots.take(&url("http://a.example:8080/x")),
        )
        .await;
        assert!(other.is_ok(), "another port is another host");
        drop(second);
        let third = tokio::time::timeout(Duration::from_millis(50), slots.take(&a)).await;
        assert!(third.is_ok(), "a freed slot is taken");
    }

    #[tokio::test]
    async fn idle_hosts_are_forgotten_and_busy_ones_kept() {
        let slots = HostSlots::new(1);
        let busy = slots.take(&url("http://busy.example/")).await;
        for n in 0..REMEMBERED_HOSTS + 10 {
            let _slot = slots.take(&url(&format!("http://h{n}.example/"))).await;
        }
        assert!(crate::sync::lock(&slots.hosts).len() <= REMEMBERED_HOSTS);
        let again = tokio::time::timeout(
            Duration::from_millis(50),
            slots.take(&url("http://busy.example/")),
        )
        .await;
        assert!(again.is_err(), "the busy host's slot is still held");
        drop(busy);
    }
}

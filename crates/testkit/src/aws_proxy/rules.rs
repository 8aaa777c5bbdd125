//! Fault rules: which requests a rule selects (operation, text, count,
//! probability, time window) and what it does to them.
//!
//! Rules are plain data (JSON for the proxy process's control API), evaluated
//! in order for every request. A `delay` adds latency and lets evaluation go
//! on; any other fault ends it. Randomness comes from one seeded generator,
//! so a run with the same seed and the same request order injects the same
//! faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::operation::Operation;

/// What a rule does to a request it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Answers an AWS error instead of forwarding: the service's shape
    /// (S3 XML, DynamoDB/SQS JSON). Default: HTTP 500 `InternalError`.
    Error {
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        code: Option<String>,
    },
    /// Answers the service's throttling error instead of forwarding:
    /// S3 503 `SlowDown`, DynamoDB 400 `ProvisionedThroughputExceededException`,
    /// SQS 400 `ThrottlingException`.
    Throttle,
    /// Waits, then goes on to the next rule (latency, slow service).
    Delay { ms: u64 },
    /// Closes the connection before forwarding: the request never happened.
    Reset,
    /// Forwards, waits for the service's answer, then closes the connection
    /// instead of answering: applied, but the reply is lost.
    Lost,
    /// Holds the request without forwarding or answering for `ms` (default:
    /// an hour), until the client gives up.
    Hang {
        #[serde(default)]
        ms: Option<u64>,
    },
    /// HTTP 200 whose body is an S3 `<Error>` (CompleteMultipartUpload can
    /// answer so); with `forward`, the request is applied first.
    Error200 {
        #[serde(default)]
        forward: bool,
    },
}

impl Fault {
    /// The word the log uses for this fault.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Error { .. } => "error",
            Self::Throttle => "throttle",
            Self::Delay { .. } => "delay",
            Self::Reset => "reset",
            Self::Lost => "lost",
            Self::Hang { .. } => "hang",
            Self::Error200 { .. } => "error200",
        }
    }

    pub fn hang_for(ms: Option<u64>) -> Duration {
        Duration::from_millis(ms.unwrap_or(3_600_000))
    }
}

/// One rule: a selection and a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// A name for the log (default: the rule's position).
    #[serde(default)]
    pub id: Option<String>,
    /// Operations selected: `s3:UploadPart`, `dynamodb:*`, `*`. Empty: all.
    #[serde(default)]
    pub ops: Vec<String>,
    /// Only requests whose S3 target, body or an `x-amz-*` header line
    /// (`name: value`) contains this text.
    #[serde(default)]
    pub matching: Option<String>,
    /// Selected requests passed over before the first injection.
    #[serde(default)]
    pub after: u64,
    /// Injections at most (default: no limit).
    #[serde(default)]
    pub count: Option<u64>,
    /// Chance that a selected request is faulted (default 1).
    #[serde(default)]
    pub probability: Option<f64>,
    /// Active from this many seconds after the rule was installed …
    #[serde(default)]
    pub from_secs: Option<f64>,
    /// … until this many.
    #[serde(default)]
    pub until_secs: Option<f64>,
    pub fault: Fault,
}

impl Rule {
    /// A rule that always applies `fault` to `op`.
    pub fn new(op: &str, fault: Fault) -> Self {
        Self {
            id: None,
            ops: vec![op.to_owned()],
            matching: None,
            after: 0,
            count: None,
            probability: None,
            from_secs: None,
            until_secs: None,
            fault,
        }
    }

    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    pub fn matching(mut self, text: &str) -> Self {
        self.matching = Some(text.to_owned());
        self
    }

    pub fn after(mut self, skipped: u64) -> Self {
        self.after = skipped;
        self
    }

    pub fn times(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    pub fn probability(mut self, chance: f64) -> Self {
        self.probability = Some(chance);
        self
    }

    pub fn window(mut self, from_secs: f64, until_secs: f64) -> Self {
        self.from_secs = Some(from_secs);
        self.until_secs = Some(until_secs);
        self
    }

    fn selects_op(&self, op: &Operation) -> bool {
        if self.ops.is_empty() {
            return true;
        }
        let qualified = op.qualified();
        self.ops.iter().any(|pattern| {
            pattern == "*"
                || *pattern == qualified
                || pattern
                    .strip_suffix(":*")
                    .is_some_and(|service| service == op.service.prefix())
        })
    }
}

/// A rule as installed: when, and how often it selected and fired.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    pub rule: Rule,
    pub label: String,
    pub installed_at: std::time::Instant,
    pub selected: u64,
    pub fired: u64,
}

impl Installed {
    pub fn new(rule: Rule, position: usize) -> Self {
        let label = rule.id.clone().unwrap_or_else(|| format!("rule{position}"));
        Self {
            rule,
            label,
            installed_at: std::time::Instant::now(),
            selected: 0,
            fired: 0,
        }
    }

    /// Whether this rule fires for `op` (with `body`) now; counts the selection.
    pub fn fires(&mut self, op: &Operation, body: &[u8], roll: &mut impl FnMut() -> f64) -> bool {
        let rule = &self.rule;
        if !rule.selects_op(op) {
            return false;
        }
        let age = self.installed_at.elapsed().as_secs_f64();
        if rule.from_secs.is_some_and(|from| age < from)
            || rule.until_secs.is_some_and(|until| age >= until)
        {
            return false;
        }
        if let Some(text) = &rule.matching
            && !op.target.contains(text.as_str())
            && !op.amz_headers.contains(text.as_str())
            && !contains(body, text.as_bytes())
        {
            return false;
        }
        if rule.count.is_some_and(|count| self.fired >= count) {
            return false;
        }
        self.selected += 1;
        if self.selected <= rule.after {
            return false;
        }
        if let Some(chance) = rule.probability
            && roll() >= chance
        {
            return false;
        }
        self.fired += 1;
        true
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::super::operation::Service;
    use super::*;

    fn op(name: &str) -> Operation {
        Operation {
            service: Service::S3,
            name: name.to_owned(),
            target: "bucket/key".to_owned(),
            upload_id: None,
            amz_headers: "x-amz-expected-bucket-owner: 111122223333\n".to_owned(),
        }
    }

    #[test]
    fn matching_finds_text_in_an_amz_header() {
        let mut never = || 0.0;
        let mut rule = Installed::new(
            Rule::new("s3:PutObject", Fault::Reset)
                .matching("x-amz-expected-bucket-owner: 111122223333"),
            0,
        );
        assert!(rule.fires(&op("PutObject"), b"", &mut never));
        let mut other = Installed::new(
            Rule::new("s3:PutObject", Fault::Reset)
                .matching("x-amz-expected-bucket-owner: 444455556666"),
            0,
        );
        assert!(!other.fires(&op("PutObject"), b"", &mut never));
    }

    #[test]
    fn after_and_count_select_a_window_of_requests() {
        let rule = Rule::new("s3:UploadPart", Fault::Reset).after(2).times(2);
        let mut installed = Installed::new(rule, 0);
        let mut always = || 0.0;
        let fired: Vec<bool> = (0..6)
            .map(|_| installed.fires(&op("UploadPart"), b"", &mut always))
            .collect();
        assert_eq!(fired, [false, false, true, true, false, false]);
        assert!(!installed.fires(&op("PutObject"), b"", &mut always));
    }

    #[test]
    fn service_wildcards_and_matching_text_narrow_the_selection() {
        let rule = Rule::new("s3:*", Fault::Throttle).matching("other-bucket");
        let mut installed = Installed::new(rule, 0);
        let mut always = || 0.0;
        assert!(!installed.fires(&op("PutObject"), b"", &mut always));
        assert!(installed.fires(&op("PutObject"), b"...other-bucket...", &mut always));
    }

    #[test]
    fn probability_uses_the_roll() {
        let rule = Rule::new("*", Fault::Lost).probability(0.5);
        let mut installed = Installed::new(rule, 0);
        assert!(installed.fires(&op("x"), b"", &mut || 0.49));
        assert!(!installed.fires(&op("x"), b"", &mut || 0.5));
    }

    #[test]
    fn rules_read_from_json() {
        let rules: Vec<Rule> = serde_json::from_str(
            r#"[{"ops": ["dynamodb:UpdateItem"], "probability": 0.01, "fault": {"kind": "lost"}},
                {"ops": ["s3:*"], "from_secs": 10, "until_secs": 70, "fault": {"kind": "throttle"}},
                {"fault": {"kind": "delay", "ms": 15}}]"#,
        )
        .unwrap();
        assert_eq!(rules[0].fault, Fault::Lost);
        assert_eq!(rules[1].until_secs, Some(70.0));
        assert_eq!(rules[2].fault, Fault::Delay { ms: 15 });
    }
}

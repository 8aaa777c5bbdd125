//! Ctrl-C reaches every command: against an AWS endpoint that never answers,
//! each command family stops within seconds of SIGINT (exit 130, one line on
//! stderr) instead of waiting out its timeouts; a second signal ends even a
//! draining worker at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::aws_proxy::{AwsProxy, Fault, Rule};

use crate::harness::Stack;

/// Far less than the SDK's 20 s attempt timeout the commands would wait.
const PROMPT: Duration = Duration::from_secs(5);

fn ferry(endpoint: &str, stack: &Stack, args: &[&str]) -> std::process::Child {
    stack
        .ferry_at(endpoint, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry")
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for `child` at most `limit`; its exit code and stderr.
fn wait(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "still running".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn every_one_shot_command_stops_promptly_on_ctrl_c() {
    let stack = Stack::new().await;
    let silent = AwsProxy::start(stack.moto.endpoint()).await;
    silent.set_rules(vec![Rule::new("*", Fault::Hang { ms: None })]);
    let endpoint = silent.endpoint();
    let families: [&[&str]; 6] = [
        &["status", "some-job"],
        &["jobs", "--status", "failed"],
        &["cancel", "some-job"],
        &["retry", "some-job"],
        &["gc", "--bucket", "some-bucket"],
        &["doctor"],
    ];
    for args in families {
        let child = ferry(&endpoint, &stack, args);
        // Long enough to be waiting on AWS.
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal(&child, "INT");
        let sent = Instant::now();
        let (code, stderr) = wait(child, PROMPT);
        assert_eq!(code, Some(130), "ferry {args:?} after SIGINT: {stderr}");
        assert!(stderr.contains("interrupted"), "ferry {args:?}: {stderr}");
        println!("ferry {args:?}: exited {:?} after SIGINT", sent.elapsed());
    }
}

#[tokio::test]
async fn a_second_signal_ends_a_draining_worker_at_once() {
    let stack = Stack::new().await;
    let silent = AwsProxy::start(stack.moto.endpoint()).await;
    silent.set_rules(vec![Rule::new("*", Fault::Hang { ms: None })]);
    let child = ferry(&silent.endpoint(), &stack, &["worker"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "INT");
    let (code, stderr) = wait(child, PROMPT);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("a second signal"), "{stderr}");
}

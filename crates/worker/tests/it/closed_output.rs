//! A reader that goes away: `ferry status J | head -1` closes the pipe
//! before ferry has written. Every later write to stdout fails; the command
//! must still do its work and end as it would have, never in a panic.

use std::process::Stdio;

use crate::harness::Stack;

#[tokio::test]
async fn commands_whose_stdout_is_closed_finish_without_a_panic() {
    let stack = Stack::new().await;
    let destination = format!("s3://{}/closed", stack.bucket);
    let url = "https://example.com/closed.bin";
    let submit = stack.cli_output(&["submit", url, &destination, "--job-id", "closed"]);
    assert!(submit.status.success(), "{submit:?}");

    let commands: [&[&str]; 4] = [
        &["status", "closed"],
        &["status", "closed", "--json"],
        &["submit", url, &destination, "--job-id", "closed"],
        &["cancel", "closed"],
    ];
    for args in commands {
        let mut child = stack
            .ferry_at(stack.moto.endpoint(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry");
        // The reader is gone before ferry writes its first line.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("ferry output");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {said}");
    }
    // The cancel was done although nobody read that it was.
    assert_eq!(stack.status("closed").await.as_deref(), Some("cancelled"));
}

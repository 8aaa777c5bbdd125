//! S3 faults: every call of a job crossed with every fault class, a
//! give-up whose abort fails, and `ferry gc` facing AWS errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_faults_on_every_call_of_a_job_end_in_one_correct_object() {
    let mut all = cells(&[
        ("s3.put_object", Kind::Small, "s3:PutObject", None),
        ("s3.create", Kind::Ranged, "s3:CreateMultipartUpload", None),
        (
            "s3.create.streamed",
            Kind::Streamed,
            "s3:CreateMultipartUpload",
            None,
        ),
        ("s3.upload_part", Kind::Ranged, "s3:UploadPart", None),
        (
            "s3.upload_part.streamed",
            Kind::Streamed,
            "s3:UploadPart",
            None,
        ),
        (
            "s3.complete",
            Kind::Ranged,
            "s3:CompleteMultipartUpload",
            None,
        ),
        (
            "s3.complete.streamed",
            Kind::Streamed,
            "s3:CompleteMultipartUpload",
            None,
        ),
        ("s3.list_parts", Kind::Resumed, "s3:ListParts", None),
    ]);
    for (name, kind) in [
        ("s3.complete/error200", Kind::Ranged),
        ("s3.complete.streamed/error200", Kind::Streamed),
    ] {
        for forward in [false, true] {
            all.push(cell(
                &format!("{name}-forward={forward}"),
                kind,
                "s3:CompleteMultipartUpload",
                None,
                Fault::Error200 { forward },
            ));
        }
    }
    // A PutObject applied with its reply lost, and the HEAD that checks for
    // the object failing too: the retry must still find the object.
    for (class, fault) in [
        (
            "error",
            Fault::Error {
                status: None,
                code: None,
            },
        ),
        ("throttle", Fault::Throttle),
    ] {
        let mut both = cell(
            &format!("s3.head_after_lost_put/{class}"),
            Kind::Small,
            "s3:HeadObject",
            None,
            fault,
        );
        both.rules.insert(
            0,
            Rule::new("s3:PutObject", Fault::Lost)
                .times(1)
                .id("lost put"),
        );
        all.push(both);
    }
    // Without s3:ListBucket (the stack's policy) S3 answers HEAD of a
    // missing object with 403: that is "not stored yet", not a failure.
    let mut forbidden = cell(
        "s3.head_403_is_missing",
        Kind::Small,
        "s3:HeadObject",
        None,
        Fault::Error {
            status: Some(403),
            code: Some("AccessDenied".into()),
        },
    );
    forbidden.rules[0].count = None;
    forbidden.rules.insert(
        0,
        Rule::new(
            "s3:PutObject",
            Fault::Error {
                status: None,
                code: None,
            },
        )
        .times(1),
    );
    all.push(forbidden);
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_give_up_whose_abort_fails_leaves_an_upload_gc_finds() {
    // The abort fails for longer than the engine retries it (and the worker
    // tries once more): the upload stays until the gc sweep, which must
    // place it through the upload# (checkpointed) or dest# (streamed) item.
    let mut all = Vec::new();
    for (name, kind) in [
        ("s3.abort_on_give_up", Kind::WrongDigest),
        ("s3.abort_on_give_up.streamed", Kind::WrongDigestStreamed),
    ] {
        for (class, fault) in classes() {
            let mut c = cell(
                &format!("{name}/{class}"),
                kind,
                "s3:AbortMultipartUpload",
                None,
                fault,
            );
            c.rules[0].count = Some(40);
            all.push(c);
        }
    }
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reports_aws_errors_and_aborts_nothing_it_cannot_place() {
    let f = Faulty::new().await;
    // An upload no ferry job started (no upload# or dest# item).
    let foreign = f
        .stack
        .s3
        .create_multipart_upload()
        .bucket(&f.stack.bucket)
        .key("foreign")
        .send()
        .await
        .unwrap();
    assert!(foreign.upload_id.is_some());
    let bucket = f.stack.bucket.clone();
    let gc = ["gc", "--bucket", bucket.as_str(), "--older-than", "0s"];
    for (op, said) in [
        (
            "s3:ListMultipartUploads",
            "S3 ListMultipartUploads failed: InternalError",
        ),
        (
            "dynamodb:GetItem",
            "DynamoDB GetItem failed: InternalServerError",
        ),
    ] {
        f.proxy.set_rules(vec![Rule::new(
            op,
            Fault::Error {
                status: None,
                code: None,
            },
        )]);
        let output = ferry_through(&f, &gc);
        assert_eq!(output.status.code(), Some(1), "{op}");
        assert!(stderr(&output).contains(said), "{op}: {}", stderr(&output));
        assert_eq!(f.stack.open_uploads().await, 1, "nothing aborted blindly");
    }
    f.proxy.clear_rules();
    let output = ferry_through(&f, &gc);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("not started by ferry"));
    assert_eq!(f.stack.open_uploads().await, 1, "a foreign upload is kept");
}

//! Throttling storms on S3 and on DynamoDB: jobs are delayed, never failed.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_storms_delay_jobs_but_fail_none() {
    let storm = |name: &str, ops: &str, kind: Kind, secs: f64| Cell {
        name: name.to_owned(),
        kind,
        rules: vec![Rule::new(ops, Fault::Throttle).id(name).window(0.0, secs)],
        faulted_op: match ops {
            // The limiter paces the throttled Create: the storm is over
            // before a part is sent.
            "s3:*" => "s3:CreateMultipartUpload".to_owned(),
            _ => "dynamodb:UpdateItem".to_owned(),
        },
        max_attempts: 1,
        upload_checksum: UploadChecksum::default(),
    };
    // S3 throttling never costs an attempt. A DynamoDB storm as long as ¾
    // of the lease (23 s of 30 s) may: renewals fail, so the worker must
    // stop writing (safety first) and the job resumes in a later attempt —
    // delayed, never failed.
    let mut dynamodb = storm("storm.dynamodb", "dynamodb:*", Kind::Ranged, 23.0);
    dynamodb.max_attempts = 2;
    run_cells(vec![
        storm("storm.s3", "s3:*", Kind::Ranged, 20.0),
        dynamodb,
    ])
    .await;
}

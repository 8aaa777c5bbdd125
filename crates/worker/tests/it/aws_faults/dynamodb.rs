//! DynamoDB faults: every write of a job, outages longer than the SDK's
//! retries, a failed release write, a lease that cannot be renewed, and
//! lease writes answered late or hung.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_faults_on_every_write_of_a_job_neither_fail_nor_double_it() {
    run_cells(cells(&[
        (
            "ddb.claim",
            Kind::Small,
            "dynamodb:UpdateItem",
            Some("claim_token"),
        ),
        (
            "ddb.renew",
            Kind::Slow,
            "dynamodb:UpdateItem",
            Some(":done"),
        ),
        (
            "ddb.succeed",
            Kind::Small,
            "dynamodb:UpdateItem",
            Some(":succeeded"),
        ),
        (
            "ddb.record_failure",
            Kind::Missing,
            "dynamodb:UpdateItem",
            Some("#error_kind"),
        ),
        (
            "ddb.mark_destination",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("dest#"),
        ),
        (
            "ddb.upload_marker",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("upload#"),
        ),
        (
            "ddb.checkpoint",
            Kind::Ranged,
            "dynamodb:UpdateItem",
            Some("#checkpointed_at"),
        ),
        (
            "ddb.part_checksum",
            Kind::Ranged,
            "dynamodb:PutItem",
            Some("#part#"),
        ),
        (
            "ddb.extend_lease",
            Kind::Ranged,
            "dynamodb:UpdateItem",
            Some(":object_crc"),
        ),
        (
            "ddb.resume_checksums",
            Kind::Resumed,
            "dynamodb:BatchGetItem",
            None,
        ),
        (
            "ddb.record_resume",
            Kind::Resumed,
            "dynamodb:UpdateItem",
            Some("#bytes_reused"),
        ),
        (
            "ddb.reject",
            Kind::Poison,
            "dynamodb:UpdateItem",
            Some(":rejected"),
        ),
    ]))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_outages_longer_than_the_sdk_retries_cost_at_most_an_attempt() {
    // Twelve failures in a row outlast the SDK's six tries: ferry's own
    // patience (claim loop, journal and record writes) must carry the job.
    // A lease may lapse meanwhile — then the job is resumed by a later
    // attempt, but never failed, dead-lettered or stored twice.
    let outage = Fault::Error {
        status: None,
        code: None,
    };
    let mut all = Vec::new();
    for (site, kind, op, matching) in [
        (
            "outage.claim",
            Kind::Small,
            "dynamodb:UpdateItem",
            "claim_token",
        ),
        (
            "outage.succeed",
            Kind::Small,
            "dynamodb:UpdateItem",
            ":succeeded",
        ),
        (
            "outage.checkpoint",
            Kind::Ranged,
            "dynamodb:UpdateItem",
            "#checkpointed_at",
        ),
        (
            "outage.mark_destination",
            Kind::Ranged,
            "dynamodb:PutItem",
            "dest#",
        ),
        ("outage.renew", Kind::Slow, "dynamodb:UpdateItem", ":done"),
        (
            "outage.resume_checksums",
            Kind::Resumed,
            "dynamodb:BatchGetItem",
            "#part#",
        ),
    ] {
        let mut c = cell(site, kind, op, Some(matching), outage.clone());
        c.rules[0].count = Some(12);
        c.max_attempts = 3;
        all.push(c);
    }
    run_cells(all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_job_whose_release_write_fails_is_still_resumed() {
    let mut all = Vec::new();
    for (class, fault) in classes() {
        let name = format!("ddb.release/{class}");
        all.push(Cell {
            name: name.clone(),
            kind: Kind::Resumed,
            rules: vec![
                Rule::new("dynamodb:UpdateItem", fault)
                    .matching("#status = :queued, #updated_at")
                    .times(8)
                    .id(&name),
            ],
            faulted_op: "dynamodb:UpdateItem".to_owned(),
            max_attempts: 2,
            upload_checksum: UploadChecksum::default(),
        });
    }
    // The release happens in the first phase, so its rules go in first.
    for cell in all {
        let outcome = released_with_faults(cell).await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

/// Like [`run_cell`] for `Kind::Resumed`, but with the rules in place while
/// the first worker releases the job.
async fn released_with_faults(cell: Cell) -> Result<(), String> {
    let f = Faulty::new().await;
    let job = "job";
    let data = test_bytes(cell.kind.size(), 7);
    let origin = ferry_testkit::Origin::start(data.clone(), cell.kind.behavior()).await;
    f.stack
        .send(&f.stack.queue, &f.stack.message(job, &origin.url("f"), job))
        .await;
    f.proxy.set_rules(cell.rules.clone());
    let first = f.worker(Duration::ZERO).await;
    f.stack
        .wait_for_parts(job, 1, Duration::from_secs(30))
        .await;
    first.stop().await;
    let worker = f.worker(Duration::from_secs(10)).await;
    let record = f.stack.wait_final(job, Duration::from_secs(120)).await;
    worker.stop().await;
    if f.proxy.faults(&cell.faulted_op).is_empty() {
        return Err(format!("{}: no fault injected", cell.name));
    }
    if text(&record, "status") != "succeeded"
        || f.stack.object(job).await.as_deref() != Some(&data[..])
    {
        return Err(format!(
            "{}: {}",
            cell.name,
            ferry_worker::store::to_json(&record)
        ));
    }
    if f.completions(job) != 1 {
        return Err(format!(
            "{}: completed {} times",
            cell.name,
            f.completions(job)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_cannot_be_renewed_never_writes_the_object() {
    // Renewals fail from the start; the download (two 64 KiB chunks, 6 s
    // apart) outlasts ¾ of a 6 s lease, so the single PutObject must not
    // be sent: another worker may own the job by then.
    let f = Faulty::new().await;
    let data = test_bytes(100 * 1024, 5);
    let origin = ferry_testkit::Origin::start(
        data.clone(),
        Behavior {
            chunk_delay: Some(Duration::from_secs(6)),
            ..Behavior::default()
        },
    )
    .await;
    f.proxy.set_rules(vec![
        Rule::new(
            "dynamodb:UpdateItem",
            Fault::Error {
                status: None,
                code: None,
            },
        )
        .matching(":done"),
    ]);
    f.stack
        .send(
            &f.stack.queue,
            &f.stack.message("job", &origin.url("f"), "job"),
        )
        .await;
    let mut config = f.stack.config();
    config.shutdown_grace = Duration::from_secs(1);
    config.engine.source.read_timeout = Duration::from_secs(10);
    let worker = spawn_worker_with(config, f.clients().await);
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(
        !f.proxy.faults("dynamodb:UpdateItem").is_empty(),
        "renewals were attempted"
    );
    assert!(
        f.proxy.forwarded("s3:PutObject").is_empty(),
        "a worker without a valid lease wrote the object"
    );
    assert_eq!(f.stack.object("job").await, None);
    // Once renewals work again the job completes, exactly once.
    f.proxy.clear_rules();
    origin.set(|b| b.chunk_delay = None);
    let record = f.stack.wait_final("job", Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(text(&record, "status"), "succeeded");
    assert_eq!(f.stack.object("job").await.as_deref(), Some(&data[..]));
    assert_eq!(f.completions("job"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_extension_answered_after_later_heartbeats_shortens_nothing() {
    // The extension before Complete is applied, its reply lost; the SDK's
    // retry (the same request, the same expiry) is held until heartbeats
    // have renewed the lease further, then applied. The whole call outlasts
    // ¾ of the 6 s lease. It must neither move the lease's expiry back nor
    // make the worker count its lease from the call's start: the job
    // completes in its first attempt.
    let f = Faulty::new().await;
    let data = test_bytes(12 << 20, 9);
    let origin = ferry_testkit::Origin::start(data.clone(), Behavior::default()).await;
    let extension = |fault: Fault, id: &str, times: u64| {
        Rule::new("dynamodb:UpdateItem", fault)
            .matching(":object_crc")
            .id(id)
            .times(times)
    };
    f.proxy.set_rules(vec![
        extension(Fault::Delay { ms: 2_500 }, "held", 2),
        extension(Fault::Lost, "lost", 1),
    ]);
    let record = one_job_on_test_leases(&f, &origin).await;
    let extensions: Vec<_> = f
        .proxy
        .log()
        .into_iter()
        .filter(|e| e.rules.iter().any(|rule| rule == "held"))
        .collect();
    assert_eq!(extensions.len(), 2, "both tries were held: {extensions:?}");
    assert_eq!(extensions[0].fault, Some("lost"), "{extensions:?}");
    assert_eq!(
        extensions[1].upstream_status,
        Some(400),
        "the late retry, applied after a later renewal, failed its condition: {extensions:?}"
    );
    assert_stored_once_in_one_attempt(&f, &record, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_hangs_is_replaced_before_the_lease_gate_closes() {
    // The first two renewal requests hang: the SDK gives up on each after
    // its attempt timeout (4 s), so the first renewal's call lasts ~9 s,
    // far past the point up to which the claim alone lets the worker write
    // (¾ of 6 s). The first part is sent at ~8 s: only a fresh renewal
    // meanwhile lets it go, in the first attempt.
    let f = Faulty::new().await;
    let data = test_bytes(12 << 20, 10);
    let origin = ferry_testkit::Origin::start(
        data.clone(),
        Behavior {
            chunk_delay: Some(Duration::from_millis(100)),
            ..Behavior::default()
        },
    )
    .await;
    f.proxy.set_rules(vec![
        Rule::new("dynamodb:UpdateItem", Fault::Hang { ms: Some(30_000) })
            .matching(":done")
            .id("hung-renewal")
            .times(2),
    ]);
    let record = one_job_on_test_leases(&f, &origin).await;
    assert!(
        !f.proxy.faults("dynamodb:UpdateItem").is_empty(),
        "the renewal was held"
    );
    assert_stored_once_in_one_attempt(&f, &record, &data).await;
}

/// Runs job `job` from `origin` to its end with one worker on the test
/// stack's short leases (6 s, a heartbeat a second).
async fn one_job_on_test_leases(
    f: &Faulty,
    origin: &ferry_testkit::Origin,
) -> ferry_worker::store::Record {
    f.stack
        .send(
            &f.stack.queue,
            &f.stack.message("job", &origin.url("f"), "job"),
        )
        .await;
    let worker = spawn_worker_with(f.stack.config(), f.clients().await);
    let record = f.stack.wait_final("job", Duration::from_secs(60)).await;
    worker.stop().await;
    record
}

async fn assert_stored_once_in_one_attempt(
    f: &Faulty,
    record: &ferry_worker::store::Record,
    data: &[u8],
) {
    let record_json = ferry_worker::store::to_json(record);
    assert_eq!(text(record, "status"), "succeeded", "{record_json}");
    assert_eq!(number(record, "attempts"), 1, "{record_json}");
    assert_eq!(f.stack.object("job").await.as_deref(), Some(data));
    assert_eq!(f.completions("job"), 1);
}

//! The S3 calls resume relies on, against moto.

use bytes::Bytes;
use ferry_engine::Destination;
use ferry_engine::sink::S3Sink;

use crate::harness::{Harness, PART};

#[tokio::test]
async fn list_parts_reports_every_uploaded_part_on_every_page_and_none_for_a_gone_upload() {
    let harness = Harness::new().await;
    let sink = S3Sink::new(harness.s3.clone());
    let dest = Destination {
        bucket: harness.bucket.clone(),
        key: "listed".into(),
        ..Destination::default()
    };
    let upload_id = sink.create(&dest).await.unwrap();
    let listed = sink.list_parts(&dest, &upload_id).await;
    assert_eq!(listed.unwrap(), Some(Vec::new()));
    for number in [1u32, 3, 4] {
        let body = Bytes::from(vec![number as u8; PART]);
        let crc = ferry_engine::checksum::crc64nvme(&body);
        sink.upload_part(&dest, &upload_id, number, body, crc)
            .await
            .unwrap();
    }
    let listed = sink.list_parts(&dest, &upload_id).await.unwrap().unwrap();
    let numbers: Vec<_> = listed.iter().map(|p| (p.number, p.len)).collect();
    assert_eq!(
        numbers,
        [(1, PART as u64), (3, PART as u64), (4, PART as u64)]
    );
    // One part a page: every page is followed.
    let paged = sink
        .list_parts_in_pages(&dest, &upload_id, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paged, listed);
    sink.abort(&dest, &upload_id).await.unwrap();
    assert_eq!(sink.list_parts(&dest, &upload_id).await.unwrap(), None);
}

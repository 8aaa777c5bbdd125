//! Which AWS operation a request is, from the request alone: S3 by method,
//! path and query; DynamoDB and SQS by `X-Amz-Target` (JSON protocols) or the
//! `Action` form field (the query protocol: SQS's older one, SNS's only one,
//! told apart by the signature's credential scope).

use hyper::Method;
use hyper::http::request::Parts;

/// The AWS service a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3,
    DynamoDb,
    Sqs,
    Sns,
}

impl Service {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::DynamoDb => "dynamodb",
            Self::Sqs => "sqs",
            Self::Sns => "sns",
        }
    }
}

/// One recognised request: `service:Operation` plus what it targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub service: Service,
    /// e.g. `UploadPart`, `UpdateItem`, `ReceiveMessage`.
    pub name: String,
    /// S3: `bucket/key` (or `bucket`); others: empty (rules match their body).
    pub target: String,
    /// S3: the `uploadId` the request names, if any.
    pub upload_id: Option<String>,
    /// The request's `x-amz-*` headers as `name: value` lines, for rules
    /// that match on one (`x-amz-expected-bucket-owner: 111122223333`).
    pub amz_headers: String,
}

impl Operation {
    /// `s3:UploadPart`, the form rules and the log use.
    pub fn qualified(&self) -> String {
        format!("{}:{}", self.service.prefix(), self.name)
    }
}

/// Recognises the operation of a request whose body is `body`.
pub fn recognise(parts: &Parts, body: &[u8]) -> Operation {
    let mut op = recognise_name(parts, body);
    op.amz_headers = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-amz-"))
        .filter_map(|(name, value)| Some(format!("{name}: {}\n", value.to_str().ok()?)))
        .collect();
    op
}

fn recognise_name(parts: &Parts, body: &[u8]) -> Operation {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let target = header("x-amz-target");
    if let Some(name) = target.strip_prefix("DynamoDB_20120810.") {
        return json_operation(Service::DynamoDb, name);
    }
    if let Some(name) = target.strip_prefix("AmazonSQS.") {
        return json_operation(Service::Sqs, name);
    }
    if header("content-type").starts_with("application/x-www-form-urlencoded")
        && let Some(action) = form_field(body, "Action")
    {
        let service = if header("authorization").contains("/sns/aws4_request") {
            Service::Sns
        } else {
            Service::Sqs
        };
        return json_operation(service, &action);
    }
    s3_operation(parts)
}

fn json_operation(service: Service, name: &str) -> Operation {
    Operation {
        service,
        name: name.to_owned(),
        target: String::new(),
        upload_id: None,
        amz_headers: String::new(),
    }
}

fn form_field(body: &[u8], field: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == field).then(|| value.to_owned())
    })
}

/// Path-style S3 (`/bucket/key?query`), the addressing ferry uses with an
/// endpoint override.
fn s3_operation(parts: &Parts) -> Operation {
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((bucket, key)) => (bucket, key),
        None => (path, ""),
    };
    let pairs: Vec<(&str, &str)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let query: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
    let upload_id = pairs
        .iter()
        .find(|(name, _)| *name == "uploadId")
        .map(|(_, value)| (*value).to_owned());
    let has = |name: &str| query.contains(&name);
    let copy = parts.headers.contains_key("x-amz-copy-source");
    let on_object = !key.is_empty();
    let name = match (&parts.method, on_object) {
        (&Method::POST, true) if has("uploads") => "CreateMultipartUpload",
        (&Method::POST, true) if has("uploadId") => "CompleteMultipartUpload",
        (&Method::PUT, true) if has("partNumber") && copy => "UploadPartCopy",
        (&Method::PUT, true) if has("partNumber") => "UploadPart",
        (&Method::PUT, true) if copy => "CopyObject",
        (&Method::PUT, true) => "PutObject",
        (&Method::DELETE, true) if has("uploadId") => "AbortMultipartUpload",
        (&Method::DELETE, true) => "DeleteObject",
        (&Method::GET, true) if has("uploadId") => "ListParts",
        (&Method::GET, true) => "GetObject",
        (&Method::HEAD, true) => "HeadObject",
        (&Method::GET, false) if has("uploads") => "ListMultipartUploads",
        (&Method::GET, false) if has("list-type") => "ListObjectsV2",
        (&Method::GET, false) if bucket.is_empty() => "ListBuckets",
        (&Method::GET, false) => "ListObjects",
        (&Method::PUT, false) => "CreateBucket",
        (&Method::HEAD, false) => "HeadBucket",
        (&Method::DELETE, false) => "DeleteBucket",
        (&Method::POST, false) if has("delete") => "DeleteObjects",
        _ => "Unknown",
    };
    Operation {
        service: Service::S3,
        name: name.to_owned(),
        target: path.to_owned(),
        upload_id,
        amz_headers: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = hyper::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn name(method: &str, uri: &str) -> String {
        recognise(&parts(method, uri, &[]), b"").qualified()
    }

    #[test]
    fn s3_operations_are_told_apart_by_method_path_and_query() {
        assert_eq!(name("POST", "/b/k?uploads"), "s3:CreateMultipartUpload");
        assert_eq!(name("PUT", "/b/k?partNumber=3&uploadId=x"), "s3:UploadPart");
        assert_eq!(
            name("POST", "/b/k?uploadId=x"),
            "s3:CompleteMultipartUpload"
        );
        assert_eq!(name("DELETE", "/b/k?uploadId=x"), "s3:AbortMultipartUpload");
        assert_eq!(name("GET", "/b/k?uploadId=x&max-parts=2"), "s3:ListParts");
        assert_eq!(name("GET", "/b?uploads"), "s3:ListMultipartUploads");
        assert_eq!(name("PUT", "/b/dir/k"), "s3:PutObject");
        assert_eq!(name("HEAD", "/b/k"), "s3:HeadObject");
        assert_eq!(name("PUT", "/b"), "s3:CreateBucket");
        let op = recognise(&parts("PUT", "/b/dir/k?x-id=PutObject", &[]), b"");
        assert_eq!(op.target, "b/dir/k");
        let op = recognise(&parts("POST", "/b/k?uploadId=u-1", &[]), b"");
        assert_eq!(op.upload_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn json_and_query_protocols_are_told_apart_by_target_or_action() {
        let dynamo = parts(
            "POST",
            "/",
            &[("x-amz-target", "DynamoDB_20120810.UpdateItem")],
        );
        assert_eq!(recognise(&dynamo, b"{}").qualified(), "dynamodb:UpdateItem");
        let sqs = parts("POST", "/", &[("x-amz-target", "AmazonSQS.ReceiveMessage")]);
        assert_eq!(recognise(&sqs, b"{}").qualified(), "sqs:ReceiveMessage");
        let form = parts(
            "POST",
            "/",
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        assert_eq!(
            recognise(&form, b"Action=SendMessage&QueueUrl=x").qualified(),
            "sqs:SendMessage"
        );
        let sns = parts(
            "POST",
            "/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0",
                ),
            ],
        );
        assert_eq!(
            recognise(&sns, b"Action=Publish&TopicArn=x").qualified(),
            "sns:Publish"
        );
    }
}

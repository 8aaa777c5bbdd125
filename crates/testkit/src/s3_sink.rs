//! A cheap S3 sink for benchmarks about the source side (`ferry-s3-sink`):
//! objects as files under a directory (tmpfs), nothing hashed or checked.
//!
//! On two cores s3s-fs (which hashes every byte it receives, twice) takes the
//! CPU a far-origin benchmark needs for the client and the path; a Python
//! sink took more still. This one writes each body to a file as it arrives
//! and nothing more. It speaks just enough S3 for ferry, rclone and s5cmd
//! to upload: HeadBucket, GetBucketLocation, an empty ListObjectsV2,
//! Head/Get/Put/DeleteObject, and Create/UploadPart/Complete/Abort
//! multipart. A completed upload is not concatenated: its part files move
//! to `KEY.parts/` with an `order` file listing the part numbers as the
//! Complete request did, and HEAD/GET read the object through it.
//! `aws-chunked` bodies are decoded. No authentication and no checksum
//! validation: a benchmark checks each stored object's sha256 afterwards.
//! Never a stand-in for S3 in correctness tests (that is moto's job).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::Digest as _;
use tokio::net::TcpListener;

const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Serves the sink on `listener` until the task is dropped; objects land in
/// `root/BUCKET/KEY` (every bucket exists), uploads in `root/.uploads/ID/`.
pub async fn serve(listener: TcpListener, root: PathBuf) {
    let root = Arc::new(root);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let root = Arc::clone(&root);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let root = Arc::clone(&root);
                async move { Ok::<_, std::convert::Infallible>(handle(&root, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn start(addr: SocketAddr, root: PathBuf) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    std::fs::create_dir_all(&root)?;
    tokio::spawn(serve(listener, root));
    Ok(bound)
}

type Answer = Response<Full<Bytes>>;

async fn handle(root: &Path, request: Request<Incoming>) -> Answer {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let query = Query(parts.uri.query().unwrap_or(""));
    // Names become paths under `root`: none may climb out of it.
    if path.split('/').any(|segment| segment == "..") {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "no '..' in names",
        );
    }
    let chunked = parts
        .headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("aws-chunked"))
        || parts
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("STREAMING-"));
    // A plain part goes to its file frame by frame, never gathered here.
    if parts.method == Method::PUT
        && !chunked
        && let (Some(id), Some(number)) = (query.get("uploadId"), query.get("partNumber"))
    {
        return stream_part(root, id, number, &mut body).await;
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return error(StatusCode::BAD_REQUEST, "IncompleteBody", &err.to_string()),
    };
    let body = if chunked {
        match decode_aws_chunked(&body) {
            Some(decoded) => decoded,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidChunk",
                    "bad aws-chunked body",
                );
            }
        }
    } else {
        body
    };
    let object = root.join(bucket).join(key);
    let result = match (&parts.method, key.is_empty()) {
        (&Method::HEAD, true) | (&Method::PUT, true) => Ok(empty(StatusCode::OK)),
        (&Method::GET, true) if query.has("location") => Ok(xml(format!(
            r#"<LocationConstraint xmlns="{NS}"></LocationConstraint>"#
        ))),
        (&Method::GET, true) => Ok(xml(format!(
            r#"<ListBucketResult xmlns="{NS}"><Name>{bucket}</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>"#
        ))),
        (&Method::HEAD, false) => head(&object),
        (&Method::GET, false) => get(&object),
        (&Method::PUT, false) => match (query.get("uploadId"), query.get("partNumber")) {
            (Some(id), Some(number)) => put_part(root, id, number, &body),
            _ => put_object(&object, &body),
        },
        (&Method::POST, false) if query.has("uploads") => create(root, bucket, key),
        (&Method::POST, false) => match query.get("uploadId") {
            Some(id) => complete(root, id, &object, bucket, key, &body),
            None => Ok(error(
                StatusCode::BAD_REQUEST,
                "NotImplemented",
                "not in this sink",
            )),
        },
        (&Method::DELETE, false) => {
            match query.get("uploadId") {
                Some(id) => {
                    let _ = std::fs::remove_dir_all(upload_dir(root, id));
                }
                None => {
                    let _ = std::fs::remove_file(&object);
                    let _ = std::fs::remove_dir_all(parts_dir(&object));
                }
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not in this sink",
        )),
    };
    result.unwrap_or_else(|err| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &err.to_string(),
        )
    })
}

/// The files an object is made of, in order: itself, or a completed
/// upload's parts.
fn pieces(object: &Path) -> Option<Vec<PathBuf>> {
    if object.is_file() {
        return Some(vec![object.to_owned()]);
    }
    let dir = parts_dir(object);
    let order = std::fs::read_to_string(dir.join("order")).ok()?;
    Some(order.split_whitespace().map(|n| dir.join(n)).collect())
}

fn parts_dir(object: &Path) -> PathBuf {
    let mut name = object.as_os_str().to_owned();
    name.push(".parts");
    PathBuf::from(name)
}

fn head(object: &Path) -> std::io::Result<Answer> {
    let Some(pieces) = pieces(object) else {
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    let mut len = 0;
    for piece in &pieces {
        len += std::fs::metadata(piece)?.len();
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert("content-length", len.into());
    headers.insert("etag", header(&format!("\"{len:x}\"")));
    headers.insert("last-modified", header("Tue, 01 Dec 2026 00:00:00 GMT"));
    Ok(response)
}

fn get(object: &Path) -> std::io::Result<Answer> {
    let Some(pieces) = pieces(object) else {
        return Ok(error(StatusCode::NOT_FOUND, "NoSuchKey", "not here"));
    };
    let mut bytes = Vec::new();
    for piece in &pieces {
        bytes.extend_from_slice(&std::fs::read(piece)?);
    }
    Ok(Response::new(Full::new(Bytes::from(bytes))))
}

/// A plain UploadPart: each frame written as it arrives.
async fn stream_part(root: &Path, id: &str, number: &str, body: &mut Incoming) -> Answer {
    let Ok(number) = number.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "InvalidArgument", "bad partNumber");
    };
    let file = upload_dir(root, id).join(number.to_string());
    let mut out = match std::fs::File::create(&file) {
        Ok(out) => out,
        Err(err) => return error(StatusCode::NOT_FOUND, "NoSuchUpload", &err.to_string()),
    };
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return error(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                "body ended early",
            );
        };
        if let Some(data) = frame.data_ref() {
            if let Err(err) = out.write_all(data) {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &err.to_string(),
                );
            }
            len += data.len();
        }
    }
    with_etag(&format!("\"part-{number}-{len:x}\""))
}

fn put_object(object: &Path, body: &[u8]) -> std::io::Result<Answer> {
    let _ = std::fs::remove_dir_all(parts_dir(object));
    write_file(object, body)?;
    // Some clients check a single PutObject's ETag against the body's MD5.
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(body)));
    Ok(with_etag(&etag))
}

/// An `aws-chunked` UploadPart (a plain one is streamed by `stream_part`).
fn put_part(root: &Path, id: &str, number: &str, body: &[u8]) -> std::io::Result<Answer> {
    let number: u32 = number.parse().map_err(|_| invalid("partNumber"))?;
    write_file(&upload_dir(root, id).join(number.to_string()), body)?;
    Ok(with_etag(&format!("\"part-{number}-{:x}\"", body.len())))
}

fn create(root: &Path, bucket: &str, key: &str) -> std::io::Result<Answer> {
    let id = format!("{:032x}", rand::random::<u128>());
    std::fs::create_dir_all(upload_dir(root, &id))?;
    Ok(xml(format!(
        r#"<InitiateMultipartUploadResult xmlns="{NS}"><Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"#
    )))
}

fn complete(
    root: &Path,
    id: &str,
    object: &Path,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> std::io::Result<Answer> {
    let text = String::from_utf8_lossy(body);
    let numbers: Vec<u32> = text
        .split("<PartNumber>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next()?.trim().parse().ok())
        .collect();
    let dir = upload_dir(root, id);
    if let Some(parent) = object.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for number in &numbers {
        if !dir.join(number.to_string()).is_file() {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                &format!("no part {number}"),
            ));
        }
    }
    let order: Vec<String> = numbers.iter().map(u32::to_string).collect();
    std::fs::write(dir.join("order"), order.join("\n"))?;
    let _ = std::fs::remove_file(object);
    let _ = std::fs::remove_dir_all(parts_dir(object));
    std::fs::rename(&dir, parts_dir(object))?;
    Ok(xml(format!(
        r#"<CompleteMultipartUploadResult xmlns="{NS}"><Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>"{id}-{}"</ETag></CompleteMultipartUploadResult>"#,
        numbers.len()
    )))
}

/// The payload of an `aws-chunked` body: `hex-size[;ext]\r\n data \r\n`…,
/// a zero-size chunk, then trailers.
fn decode_aws_chunked(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(Bytes::from(out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn upload_dir(root: &Path, id: &str) -> PathBuf {
    let clean: String = id.chars().filter(char::is_ascii_hexdigit).collect();
    root.join(".uploads").join(clean)
}

fn write_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, body)
}

struct Query<'a>(&'a str);

impl<'a> Query<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad {what}"))
}

fn header(value: &str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("x"))
}

fn empty(status: StatusCode) -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn with_etag(etag: &str) -> Answer {
    let mut response = empty(StatusCode::OK);
    response.headers_mut().insert("etag", header(etag));
    response
}

fn xml(body: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert("content-type", header("application/xml"));
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let mut response = xml(format!(
        "<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_chunked_bodies_are_decoded_trailers_and_all() {
        let body = b"5;chunk-signature=ab\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
        assert_eq!(
            decode_aws_chunked(body).as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(decode_aws_chunked(b"5\r\nhel"), None);
    }

    #[tokio::test]
    async fn a_name_that_climbs_out_of_the_root_is_refused() {
        let root = std::env::temp_dir().join(format!("ferry-s3-sink-{}", std::process::id()));
        let addr = start(([127, 0, 0, 1], 0).into(), root.join("store"))
            .await
            .unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = "PUT /bucket/../../escaped HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(!root.join("escaped").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn query_parameters_are_found_with_and_without_values() {
        let q = Query("uploads&x=1&uploadId=ab12&partNumber=7");
        assert!(q.has("uploads"));
        assert_eq!(q.get("uploadId"), Some("ab12"));
        assert_eq!(q.get("partNumber"), Some("7"));
        assert_eq!(q.get("missing"), None);
    }
}

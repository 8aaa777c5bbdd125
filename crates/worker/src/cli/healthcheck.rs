//! `ferry healthcheck`: exit 0 when the local worker's `/healthz` answers 200.
//! The container health check runs this, so the image needs no shell or curl.

use std::time::Duration;

use clap::Args;

use crate::CliError;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
    pub url: String,
}

pub async fn run(args: HealthcheckArgs) -> Result<(), CliError> {
    let failed = |message: String| CliError::Failed {
        kind: "unhealthy",
        message,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|err| failed(err.to_string()))?;
    let response = client
        .get(&args.url)
        .send()
        .await
        .map_err(|err| failed(format!("{} unreachable: {}", args.url, err.without_url())))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{} answered {}",
            args.url,
            response.status()
        )))
    }
}

//! SigV4 for the IAM-authorized HTTP API on AWS (service `execute-api`), through `aws-sigv4`
//! with credentials from the SDK's default chain.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};

use crate::error::CliError;

const SERVICE: &str = "execute-api";

pub struct AwsSigner {
    credentials: Credentials,
    region: String,
}

impl std::fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigner").field("region", &self.region).finish_non_exhaustive()
    }
}

/// `{api}.execute-api.{region}.amazonaws.com` names its region.
fn region_of_host(host: &str) -> Option<String> {
    let mut labels = host.split('.');
    labels.next()?;
    (labels.next()? == SERVICE).then(|| labels.next().map(str::to_owned)).flatten()
}

impl AwsSigner {
    pub fn new(credentials: Credentials, region: impl Into<String>) -> Self {
        AwsSigner { credentials, region: region.into() }
    }

    /// Credentials from the default chain (environment, profile, SSO cache, instance role…);
    /// the region from the API's host name, else the SDK's (`AWS_REGION`, profile).
    pub async fn from_environment(api: &reqwest::Url) -> Result<Self, CliError> {
        let config = aws_config::load_from_env().await;
        let region = api
            .host_str()
            .and_then(region_of_host)
            .or_else(|| config.region().map(|r| r.to_string()))
            .ok_or_else(|| CliError::Aws("no region: use the execute-api URL or set AWS_REGION".into()))?;
        let provider =
            config.credentials_provider().ok_or_else(|| CliError::Aws("no credentials provider configured".into()))?;
        let credentials =
            provider.provide_credentials().await.map_err(|e| CliError::Aws(format!("no credentials: {e}")))?;
        Ok(AwsSigner::new(credentials, region))
    }

    /// Adds `Authorization`, `X-Amz-Date` (and `X-Amz-Security-Token`) to a finished request;
    /// the headers it already has and its body are signed.
    pub fn sign(&self, request: &mut reqwest::Request, time: SystemTime) -> Result<(), CliError> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CliError::Aws(format!("signing parameters: {e}")))?
            .into();
        let headers: Vec<(&str, &str)> =
            request.headers().iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))).collect();
        let body = request.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| CliError::Aws(format!("cannot sign this request: {e}")))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|e| CliError::Aws(format!("signing: {e}")))?.into_parts();
        let (signed, _) = instructions.into_parts();
        for header in signed {
            let name = HeaderName::from_static(header.name());
            let value = HeaderValue::from_str(header.value()).map_err(|e| CliError::Aws(format!("signing: {e}")))?;
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn signed(signer: &AwsSigner, body: &'static str, at: SystemTime) -> reqwest::Request {
        let url = "https://abc123.execute-api.eu-west-1.amazonaws.com/integrations/sandbox/events?limit=5";
        let mut request =
            reqwest::Client::new().post(url).header("content-type", "application/json").body(body).build().unwrap();
        signer.sign(&mut request, at).unwrap();
        request
    }

    fn header(request: &reqwest::Request, name: &str) -> String {
        request.headers()[name].to_str().unwrap().to_owned()
    }

    #[test]
    fn region_comes_from_execute_api_hosts_only() {
        assert_eq!(region_of_host("abc123.execute-api.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of_host("api.example.com"), None);
        assert_eq!(region_of_host("localhost"), None);
    }

    #[test]
    fn signing_is_deterministic_and_shaped_like_sigv4() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test");
        let signer = AwsSigner::new(credentials, "eu-west-1");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_732_800); // 2025-01-01T12:00:00Z
        let first = signed(&signer, "{}", at);
        let authorization = header(&first, "authorization");
        let (prefix, signature) = authorization.rsplit_once("Signature=").unwrap();
        assert_eq!(
            prefix,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/eu-west-1/execute-api/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, "
        );
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(header(&first, "x-amz-date"), "20250101T120000Z");
        assert!(!authorization.contains("wJalrXUtnFEMI"), "the secret key is never sent");

        assert_eq!(header(&signed(&signer, "{}", at), "authorization"), authorization, "same input, same signature");
        assert_ne!(header(&signed(&signer, "[]", at), "authorization"), authorization, "the body is signed");
        let later = signed(&signer, "{}", at + Duration::from_secs(1));
        assert_ne!(header(&later, "authorization"), authorization, "the time is signed");
    }

    #[test]
    fn session_tokens_are_sent() {
        let credentials = Credentials::new("ASIAEXAMPLE", "secret", Some("session-token".into()), None, "test");
        let request = signed(&AwsSigner::new(credentials, "us-east-1"), "{}", SystemTime::UNIX_EPOCH);
        assert_eq!(header(&request, "x-amz-security-token"), "session-token");
        assert!(header(&request, "authorization").contains("/us-east-1/execute-api/aws4_request"));
    }
}

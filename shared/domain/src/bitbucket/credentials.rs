//! The credential kinds a connection can use. A credential lives only in the secret store (as
//! the JSON [`Credential::to_secret`] writes); records and answers carry its [`Credential::summary`].

use serde::Deserialize;
use serde_json::{Value, json};

use crate::secrets::{Secret, SecretError};
use crate::webhook::Flavor;

#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credential {
    /// Atlassian account email + API token, HTTP Basic (Cloud).
    ApiToken { email: String, token: Secret },
    /// Workspace, project or repository access token, Bearer (Cloud).
    AccessToken { token: Secret },
    /// OAuth consumer key + secret, client-credentials grant (Cloud).
    OauthConsumer { key: String, secret: Secret },
    /// Data Center HTTP access token, Bearer.
    HttpToken { token: Secret },
    /// Legacy: Cloud removed app passwords on 2026-07-28.
    AppPassword { username: String, app_password: Secret },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.summary())
    }
}

impl Credential {
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ApiToken { .. } => "api_token",
            Credential::AccessToken { .. } => "access_token",
            Credential::OauthConsumer { .. } => "oauth_consumer",
            Credential::HttpToken { .. } => "http_token",
            Credential::AppPassword { .. } => "app_password",
        }
    }

    /// What may be shown about the credential: its kind and non-secret identifier.
    pub fn summary(&self) -> Value {
        match self {
            Credential::ApiToken { email, .. } => json!({"kind": self.kind(), "email": email}),
            Credential::OauthConsumer { key, .. } => json!({"kind": self.kind(), "key": key}),
            Credential::AppPassword { username, .. } => json!({"kind": self.kind(), "username": username}),
            Credential::AccessToken { .. } | Credential::HttpToken { .. } => json!({"kind": self.kind()}),
        }
    }

    /// Which product accepts this kind.
    pub fn fits(&self, flavor: Flavor) -> bool {
        match self {
            Credential::HttpToken { .. } => flavor == Flavor::DataCenter,
            _ => flavor == Flavor::Cloud,
        }
    }

    /// Empty fields are refused before anything reaches Bitbucket; returns the field's name.
    pub fn empty_field(&self) -> Option<&'static str> {
        let blank = |s: &str| s.trim().is_empty();
        match self {
            Credential::ApiToken { email, .. } if blank(email) || !email.contains('@') => Some("credential.email"),
            Credential::ApiToken { token, .. } if blank(token.expose()) => Some("credential.token"),
            Credential::AccessToken { token } | Credential::HttpToken { token } if blank(token.expose()) => {
                Some("credential.token")
            }
            Credential::OauthConsumer { key, .. } if blank(key) => Some("credential.key"),
            Credential::OauthConsumer { secret, .. } if blank(secret.expose()) => Some("credential.secret"),
            Credential::AppPassword { username, .. } if blank(username) => Some("credential.username"),
            Credential::AppPassword { app_password, .. } if blank(app_password.expose()) => {
                Some("credential.app_password")
            }
            _ => None,
        }
    }

    pub fn to_secret(&self) -> Secret {
        let value = match self {
            Credential::ApiToken { email, token } => {
                json!({"kind": self.kind(), "email": email, "token": token.expose()})
            }
            Credential::AccessToken { token } | Credential::HttpToken { token } => {
                json!({"kind": self.kind(), "token": token.expose()})
            }
            Credential::OauthConsumer { key, secret } => {
                json!({"kind": self.kind(), "key": key, "secret": secret.expose()})
            }
            Credential::AppPassword { username, app_password } => {
                json!({"kind": self.kind(), "username": username, "app_password": app_password.expose()})
            }
        };
        Secret::new(value.to_string())
    }

    pub fn from_secret(name: &str, secret: &Secret) -> Result<Self, SecretError> {
        serde_json::from_str(secret.expose()).map_err(|_| SecretError::Corrupt(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_debugs_secrets() {
        let c: Credential = serde_json::from_str(r#"{"kind":"api_token","email":"a@b.c","token":"tok-123"}"#).unwrap();
        assert!(!format!("{c:?}").contains("tok-123"));
        assert!(!c.summary().to_string().contains("tok-123"));
        let back = Credential::from_secret("n", &c.to_secret()).unwrap();
        assert!(matches!(back, Credential::ApiToken { ref token, .. } if token.expose() == "tok-123"));
        assert!(serde_json::from_str::<Credential>(r#"{"kind":"password","user":"x"}"#).is_err());
        assert!(c.fits(Flavor::Cloud) && !c.fits(Flavor::DataCenter));
    }
}

//! Where token-mode sessions get their SIP digest credentials, so the password never reaches
//! the page: a TOML file (read at start-up, re-read when it changes), or an HTTP(S) lookup to
//! the CRM per login.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Deserialize;

use crate::http_client::HttpClient;

/// Largest lookup answer read; a real one is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// One extension's SIP digest credentials.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipCredentials {
    /// Digest username when it differs from the extension (e.g. an auth id).
    #[serde(default)]
    pub auth_user: Option<String>,
    /// The digest password; never logged.
    pub password: String,
}

impl std::fmt::Debug for SipCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipCredentials")
            .field("auth_user", &self.auth_user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why no credentials came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The source does not know the extension (file: no entry; HTTP: 404).
    #[error("no SIP credentials for this extension")]
    Unknown,
    /// The CRM could not be asked or gave no usable answer (timeout, 5xx, bad JSON…).
    #[error("credential lookup failed: {0}")]
    Unavailable(String),
}

/// The configured source.
pub enum CredentialSource {
    /// The credentials file's entries (reloaded when it changes).
    File(Arc<CredentialsFile>),
    /// Asked per login.
    Http(Box<HttpLookup>),
}

/// The CRM's credential endpoint.
pub struct HttpLookup {
    /// Shared HTTPS client.
    pub client: HttpClient,
    /// URL; `{extension}` is replaced by the extension, otherwise `?extension=` is appended.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<String>,
    /// Whole-request timeout (connect, TLS, answer).
    pub timeout: Duration,
}

/// One file entry: a bare password or a table with `password` and `auth_user`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileEntry {
    Password(String),
    Full(SipCredentials),
}

/// Parses a credentials file: `"1001" = "password"` or
/// `"1001" = { password = "…", auth_user = "…" }`, one line per extension.
pub fn parse_file(text: &str) -> Result<HashMap<String, SipCredentials>, String> {
    let entries: HashMap<String, FileEntry> = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = HashMap::with_capacity(entries.len());
    for (extension, entry) in entries {
        let credentials = match entry {
            FileEntry::Password(password) => SipCredentials {
                auth_user: None,
                password,
            },
            FileEntry::Full(credentials) => credentials,
        };
        if credentials.password.is_empty() {
            return Err(format!("extension {extension:?} has an empty password"));
        }
        out.insert(extension, credentials);
    }
    Ok(out)
}

/// The credentials file and the entries last loaded from it. A reload that finds changed
/// contents replaces all entries at once; contents that do not parse leave the previous
/// entries in force.
pub struct CredentialsFile {
    path: PathBuf,
    entries: RwLock<Arc<HashMap<String, SipCredentials>>>,
    /// The contents last examined (`None`: unreadable), so an unchanged file (or the same
    /// broken one) is not parsed, logged and counted again at every check.
    seen: Mutex<Option<Vec<u8>>>,
}

/// What a check of the credentials file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileReload {
    /// Same contents as last time.
    Unchanged,
    /// New entries are in force; the number of extensions.
    Reloaded(usize),
    /// The file changed but cannot be used (unreadable, not TOML, an empty password); the
    /// previous entries stay.
    Failed(String),
}

impl CredentialsFile {
    /// Loads the file; start-up fails on an error, unlike a reload.
    pub fn load(path: &Path) -> Result<Arc<CredentialsFile>, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?;
        let entries = parse_bytes(path, &bytes)?;
        Ok(Arc::new(CredentialsFile {
            path: path.to_path_buf(),
            entries: RwLock::new(Arc::new(entries)),
            seen: Mutex::new(Some(bytes)),
        }))
    }

    /// The file's path, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; when it changed since the last check (or `force`), parses it and
    /// puts its entries in force if it is valid.
    pub fn reload(&self, force: bool) -> FileReload {
        let read = std::fs::read(&self.path);
        let changed = match self.seen.lock() {
            Ok(mut seen) => {
                let now = read.as_ref().ok().cloned();
                let changed = *seen != now;
                *seen = now;
                changed
            }
            Err(_) => true,
        };
        if !changed && !force {
            return FileReload::Unchanged;
        }
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                return FileReload::Failed(format!(
                    "cannot read credentials file {}: {e}",
                    self.path.display()
                ));
            }
        };
        match parse_bytes(&self.path, &bytes) {
            Ok(entries) => {
                let count = entries.len();
                if let Ok(mut current) = self.entries.write() {
                    *current = Arc::new(entries);
                }
                FileReload::Reloaded(count)
            }
            Err(e) => FileReload::Failed(e),
        }
    }

    /// The entry in force for `extension`.
    pub fn get(&self, extension: &str) -> Option<SipCredentials> {
        self.entries
            .read()
            .ok()
            .and_then(|entries| entries.get(extension).cloned())
    }
}

/// Re-checks `file` every `interval` (zero: on SIGHUP only) and at every SIGHUP, until
/// `cancel`; a changed file is loaded or, when broken, logged and counted while the previous
/// entries stay in force. Passwords are never logged.
pub fn spawn_watch(
    file: Arc<CredentialsFile>,
    interval: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    hangups: crate::reload::Hangups,
    cancel: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(crate::reload::run(
        interval,
        hangups,
        cancel,
        move |force| match file.reload(force) {
            FileReload::Unchanged => {}
            FileReload::Reloaded(extensions) => {
                metrics.credentials_reload("ok");
                tracing::info!(file = %file.path().display(), extensions, "credentials file reloaded");
            }
            FileReload::Failed(error) => {
                metrics.credentials_reload("failed");
                tracing::warn!(%error, "credentials file not reloaded; the previous entries stay in force");
            }
        },
    ));
}

fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<HashMap<String, SipCredentials>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("credentials file {}: not UTF-8", path.display()))?;
    parse_file(text).map_err(|e| format!("credentials file {}: {e}", path.display()))
}

/// The lookup URL for one extension (already validated to be digits, letters, `.`, `_`,
/// `-`, `+`; `+` is percent-encoded).
pub fn lookup_url(template: &str, extension: &str) -> String {
    let encoded = extension.replace('+', "%2B");
    if template.contains("{extension}") {
        template.replace("{extension}", &encoded)
    } else if template.contains('?') {
        format!("{template}&extension={encoded}")
    } else {
        format!("{template}?extension={encoded}")
    }
}

impl CredentialSource {
    /// Finds `extension`'s credentials; never waits longer than the lookup timeout.
    pub async fn lookup(&self, extension: &str) -> Result<SipCredentials, LookupError> {
        match self {
            CredentialSource::File(file) => file.get(extension).ok_or(LookupError::Unknown),
            CredentialSource::Http(http) => {
                match tokio::time::timeout(http.timeout, http.ask(extension)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(LookupError::Unavailable(format!(
                        "no answer within {} ms",
                        http.timeout.as_millis()
                    ))),
                }
            }
        }
    }
}

impl HttpLookup {
    async fn ask(&self, extension: &str) -> Result<SipCredentials, LookupError> {
        let url = lookup_url(&self.url, extension);
        let mut request = hyper::Request::get(url)
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("callgate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(bearer) = &self.bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| LookupError::Unavailable(format!("bad lookup URL: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| LookupError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status == hyper::StatusCode::NOT_FOUND {
            return Err(LookupError::Unknown);
        }
        if !status.is_success() {
            return Err(LookupError::Unavailable(format!(
                "the CRM answered {status}"
            )));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| LookupError::Unavailable(format!("reading the answer: {e}")))?
            .to_bytes();
        let credentials: SipCredentials = serde_json::from_slice(&body).map_err(|_| {
            LookupError::Unavailable(
                "the answer is not {\"password\": …, \"auth_user\"?: …} JSON".into(),
            )
        })?;
        if credentials.password.is_empty() {
            return Err(LookupError::Unavailable(
                "the answer has an empty password".into(),
            ));
        }
        Ok(credentials)
    }
}

/// The client error with its causes (hyper-util's top-level message is just "client error").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_entries_are_a_password_or_a_table() {
        let entries = parse_file(
            "\"1001\" = \"s3cret\"\n\"1002\" = { password = \"pw2\", auth_user = \"a1002\" }\n",
        )
        .expect("parses");
        assert_eq!(entries["1001"].password, "s3cret");
        assert_eq!(entries["1001"].auth_user, None);
        assert_eq!(entries["1002"].auth_user.as_deref(), Some("a1002"));
        assert!(parse_file("\"1001\" = \"\"").is_err(), "empty password");
        assert!(
            parse_file("\"1001\" = { pass = \"x\" }").is_err(),
            "unknown key"
        );
        assert!(parse_file("not toml [").is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!(
            "{:?}",
            SipCredentials {
                auth_user: None,
                password: "hunter2".into()
            }
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn lookup_urls_name_the_extension() {
        assert_eq!(
            lookup_url("https://crm/sip/{extension}/creds", "1001"),
            "https://crm/sip/1001/creds"
        );
        assert_eq!(
            lookup_url("https://crm/sip", "+84"),
            "https://crm/sip?extension=%2B84"
        );
        assert_eq!(
            lookup_url("https://crm/sip?x=1", "1001"),
            "https://crm/sip?x=1&extension=1001"
        );
    }
}

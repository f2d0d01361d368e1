//! Who may call Sluice: API keys with scopes on the REST services (ingest API and query API),
//! and the flags that set them and the cluster secret the services share on gRPC
//! ([`ClusterArgs`]; `sluice_proto::cluster` checks it).
//!
//! A key is a random secret that a client sends as `Authorization: Bearer <key>`. The services
//! keep only its SHA-256: a key carries 256 random bits, so a fast hash leaves nothing to guess,
//! and a leaked keys file gives no key away. A presented key is hashed and compared with every
//! known hash in constant time; neither a key nor a hash is ever logged, only the key's name.
//!
//! Scopes:
//! - `write:<platform>` (or `write:*`): POST that platform's notifications and read them back
//!   by id. A key for `x` can neither write `instagram`'s notifications nor squat their ids.
//! - `read`: SQL, query states, posts' state and trail, any notification by id, stats.
//! - `admin`: replay, maintenance, dead letters.
//!
//! Keys come from a file (`--keys-file`) or the environment (`SLUICE_KEYS`), one per line:
//! `<name> <scope>[,<scope>…] sha256:<64 hex digits>`. `sluice key` makes a new key and its line.
//!
//! - [`Keys`]: the loaded keys, and [`Keys::caller`], who sent a request.
//! - [`Caller`]: an axum extractor; handlers ask it for the scope they need.
//! - [`AuthError`]: 401 when the key is missing or unknown, 403 when its scope is too narrow.
//! - [`AuthArgs`], [`ClusterArgs`]: the flags, and when a service may run open (only
//!   `sluice all` on a local directory, or `--auth off`).

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use sluice_core::notification::check_platform;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a key may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    write_any: bool,
    write: BTreeSet<String>,
    read: bool,
    admin: bool,
}

impl Scopes {
    /// Parses `read,write:x,write:y`.
    pub fn parse(list: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for scope in list.split(',').map(str::trim) {
            match scope {
                "read" => scopes.read = true,
                "admin" => scopes.admin = true,
                "write:*" => scopes.write_any = true,
                _ => match scope.strip_prefix("write:") {
                    Some(platform) => {
                        check_platform(platform).map_err(|e| format!("scope {scope:?}: {e}"))?;
                        scopes.write.insert(platform.to_string());
                    }
                    None => {
                        return Err(format!(
                            "unknown scope {scope:?}: use read, admin, write:* or write:<platform>"
                        ));
                    }
                },
            }
        }
        Ok(scopes)
    }

    pub fn may_write(&self, platform: &str) -> bool {
        self.write_any || self.write.contains(platform)
    }

    pub fn may_read(&self) -> bool {
        self.read
    }

    pub fn may_admin(&self) -> bool {
        self.admin
    }

    /// The platforms it may write, in words.
    fn writable(&self) -> String {
        if self.write_any {
            "every platform".to_string()
        } else if self.write.is_empty() {
            "none".to_string()
        } else {
            self.write.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

#[derive(Debug)]
struct Key {
    name: Arc<str>,
    hash: [u8; 32],
    scopes: Arc<Scopes>,
}

/// Counts each key's requests, by key name.
type KeyLimiter = RateLimiter<Arc<str>, DefaultKeyedStateStore<Arc<str>>, DefaultClock>;

/// The keys a service accepts, or none needed (open).
#[derive(Debug)]
pub struct Keys {
    keys: Vec<Key>,
    open: bool,
    /// Requests per second each key may send, and the limiter that counts them (by key name:
    /// a bounded set, so it cannot grow with what callers send).
    limit: Option<(u32, KeyLimiter)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}, line {line}: {reason}")]
pub struct KeysError {
    origin: String,
    line: usize,
    reason: String,
}

impl Keys {
    /// No key needed: every call is allowed.
    pub fn open() -> Keys {
        Keys {
            keys: Vec::new(),
            open: true,
            limit: None,
        }
    }

    /// Parses lines of `<name> <scopes> sha256:<hex>`; blank lines and `#` comments are
    /// skipped, and `;` separates lines too (for an environment variable). `origin` names the
    /// source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Keys, KeysError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let error = |reason: String| KeysError {
                origin: origin.to_string(),
                line: index + 1,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, hash] = fields[..] else {
                return Err(error(
                    "expected `<name> <scope>[,<scope>…] sha256:<64 hex digits>`".to_string(),
                ));
            };
            check_name(name).map_err(error)?;
            let scopes = Scopes::parse(scopes).map_err(error)?;
            let hash = parse_hash(hash).map_err(error)?;
            if let Some(other) = keys.iter().find(|k| k.name.as_ref() == name) {
                return Err(error(format!("the name {:?} is taken twice", other.name)));
            }
            if keys.iter().any(|k| k.hash == hash) {
                return Err(error(format!("{name}: the same key is listed twice")));
            }
            keys.push(Key {
                name: name.into(),
                hash,
                scopes: Arc::new(scopes),
            });
        }
        Ok(Keys {
            keys,
            open: false,
            limit: None,
        })
    }

    /// Limits each key to `per_second` requests a second on average, with bursts of twice
    /// that (0: no limit). A key over its limit gets 429 with Retry-After.
    pub fn with_rate_limit(mut self, per_second: u32) -> Keys {
        self.limit = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
            (
                per_second,
                RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            )
        });
        self
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key `presented` is, if any. Every known hash is compared, in constant time, so how
    /// long this takes says nothing about which key matched or how close a guess came.
    fn identify(&self, presented: &str) -> Option<&Key> {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = u32::MAX;
        for (index, key) in self.keys.iter().enumerate() {
            found.conditional_assign(&(index as u32), key.hash.ct_eq(&presented));
        }
        self.keys.get(found as usize)
    }

    /// Who sent a request with these headers.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        if self.open {
            return Ok(Caller::Open);
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, key) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .filter(|key| !key.is_empty())
            .ok_or(AuthError::Malformed)?;
        let key = self.identify(presented).ok_or(AuthError::Unknown)?;
        if let Some((per_second, limiter)) = &self.limit
            && let Err(not_until) = limiter.check_key(&key.name)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(AuthError::RateLimited {
                key: key.name.to_string(),
                per_second: *per_second,
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        Ok(Caller::Key {
            name: key.name.clone(),
            scopes: key.scopes.clone(),
            authorization: value.clone(),
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "key name {name:?}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn parse_hash(hash: &str) -> Result<[u8; 32], String> {
    let hex_digits = hash.strip_prefix("sha256:").ok_or_else(|| {
        "the third field must be `sha256:<64 hex digits>`, the hash of the key (never the key itself)".to_string()
    })?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut bytes)
        .map_err(|e| format!("the hash after `sha256:` must be 64 hex digits: {e}"))?;
    Ok(bytes)
}

/// A new random key: `sk_` and 64 hex digits (256 bits).
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("sk_{}", hex::encode(bytes))
}

/// The keys-file line for `key`: `<name> <scopes> sha256:<hex>`. Checks the name and scopes.
pub fn key_line(name: &str, scopes: &str, key: &str) -> Result<String, String> {
    check_name(name)?;
    Scopes::parse(scopes)?;
    Ok(format!(
        "{name} {scopes} sha256:{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: anyone may do anything.
    Open,
    Key {
        name: Arc<str>,
        scopes: Arc<Scopes>,
        /// The header as sent, for a call this service makes on the caller's behalf.
        authorization: HeaderValue,
    },
}

impl Caller {
    /// The key's name, for logs.
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "(open)",
            Caller::Key { name, .. } => name,
        }
    }

    /// The Authorization header to pass on when this service asks another on the caller's
    /// behalf (the query API asking the ingest nodes), so that the caller's scope still holds.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        match self {
            Caller::Open => None,
            Caller::Key { authorization, .. } => Some(authorization),
        }
    }

    fn check(
        &self,
        allowed: impl Fn(&Scopes) -> bool,
        action: &str,
        needed: &str,
    ) -> Result<(), AuthError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key { scopes, .. } if allowed(scopes) => Ok(()),
            Caller::Key { name, scopes, .. } => Err(AuthError::Forbidden {
                key: name.to_string(),
                action: action.to_string(),
                needed: needed.to_string(),
                writes: scopes.writable(),
            }),
        }
    }

    pub fn require_read(&self) -> Result<(), AuthError> {
        self.check(Scopes::may_read, "read", "read")
    }

    pub fn require_admin(&self) -> Result<(), AuthError> {
        self.check(Scopes::may_admin, "administer", "admin")
    }

    /// Writing `platform`'s notifications.
    pub fn require_write(&self, platform: &str) -> Result<(), AuthError> {
        self.check(
            |s| s.may_write(platform),
            &format!("write platform {platform:?}'s notifications"),
            &format!("write:{platform}"),
        )
    }

    /// Reading one of `platform`'s notifications: a reader, or a writer of that platform.
    pub fn require_read_of(&self, platform: &str) -> Result<(), AuthError> {
        self.check(
            |s| s.may_read() || s.may_write(platform),
            &format!("read platform {platform:?}'s notifications"),
            &format!("read or write:{platform}"),
        )
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Keys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Arc::<Keys>::from_ref(state).caller(&parts.headers)
    }
}

/// Why a call was refused. The answer names what is missing, never a key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the Authorization header must be `Bearer <key>`")]
    Malformed,
    #[error("the API key is not one this server knows")]
    Unknown,
    #[error("key {key:?} may not {action}: that needs the scope {needed} (it may write: {writes})")]
    Forbidden {
        key: String,
        action: String,
        needed: String,
        writes: String,
    },
    #[error(
        "key {key:?} sent more than {per_second} requests a second (bursts of twice that); retry after {retry_after_secs} s"
    )]
    RateLimited {
        key: String,
        per_second: u32,
        retry_after_secs: u64,
    },
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Malformed | AuthError::Unknown => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let AuthError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                AuthError::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Whether calls need credentials: an API key on REST, the cluster secret on gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// On, except for `sluice all` on a local directory with no keys given (which also makes
    /// its own cluster secret).
    Auto,
    On,
    Off,
}

/// The flags every service shares: how services authenticate each other on gRPC.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Whether calls need credentials: an API key (`Authorization: Bearer <key>`) on the REST
    /// APIs, the cluster secret between services. auto: on, except that `sluice all` on a local
    /// directory without keys runs its REST APIs open, and `sluice all` makes its own secret.
    #[arg(long = "auth", env = "SLUICE_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub mode: AuthMode,
    /// The secret every Sluice service sends and requires on gRPC (at least 16 printable
    /// characters, the same on every service).
    #[arg(long, env = "SLUICE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret (trailing whitespace ignored).
    #[arg(long, env = "SLUICE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// This service's TLS certificate (PEM, chain first) for gRPC between services; with
    /// --tls-key and --tls-ca, every gRPC connection of this process is TLS.
    #[arg(long, env = "SLUICE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every Sluice service's certificate (PEM): servers are checked
    /// against it, and clients too with --tls-client-auth.
    #[arg(long, env = "SLUICE_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by --tls-ca on every gRPC connection (mTLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_AUTH", requires = "tls_cert")]
    pub tls_client_auth: bool,
    /// The name clients check in servers' certificates instead of the host they dial (e.g.
    /// when they dial pods' IPs).
    #[arg(long, env = "SLUICE_TLS_SERVER_NAME", requires = "tls_cert")]
    pub tls_server_name: Option<String>,
}

impl ClusterArgs {
    /// The cluster secret to require and send: the one given, else a new random one when
    /// `make_one` (`sluice all`, whose services are all in this process), else none if auth is
    /// off; otherwise an error that says what to set.
    pub fn secret(&self, make_one: bool) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.cluster_secret_file {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the cluster secret file {}: {e}",
                    path.display()
                )
            })?;
            return Ok(Some(secret.trim_end().to_string()));
        }
        if let Some(secret) = &self.cluster_secret {
            return Ok(Some(secret.clone()));
        }
        if make_one {
            return Ok(Some(hex::encode(rand::random::<[u8; 32]>())));
        }
        if self.mode == AuthMode::Off {
            tracing::warn!(
                "no cluster secret and auth is off: anyone who reaches this service's gRPC port can call it"
            );
            return Ok(None);
        }
        anyhow::bail!(
            "auth is on and no cluster secret is given: set SLUICE_CLUSTER_SECRET (or --cluster-secret-file) to the same secret of at least 16 characters on every Sluice service, or --auth off to run open"
        )
    }
}

/// The flags of the REST services: API keys, and the cluster's.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// A file of API keys, one per line: `<name> <scope>[,<scope>…] sha256:<hex>`, with the
    /// scopes write:<platform>, write:*, read and admin. `sluice key` makes a key and its line.
    #[arg(long, env = "SLUICE_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// API keys in the keys file's form, separated by newlines or ';'.
    #[arg(long, env = "SLUICE_KEYS", hide_env_values = true)]
    pub keys: Option<String>,
    /// Requests a second each API key may send on average, in bursts of up to twice that;
    /// more get 429 with Retry-After (0, the default: no limit, since a platform that sends
    /// one notification a request may need thousands a second).
    #[arg(long, env = "SLUICE_RATE_LIMIT_PER_KEY", default_value_t = 0)]
    pub rate_limit_per_key: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl AuthArgs {
    /// The keys to check calls against. `open_by_default` is for `sluice all` on a local
    /// directory: there, with no keys given, the service runs open and says so.
    pub fn load(&self, open_by_default: bool) -> anyhow::Result<Arc<Keys>> {
        let mode = self.cluster.mode;
        if mode == AuthMode::Off {
            tracing::warn!(
                "auth is off (--auth off): anyone who reaches this port can write any platform's notifications and read everything"
            );
            return Ok(Arc::new(Keys::open()));
        }
        let mut text = String::new();
        let mut origins = Vec::new();
        if let Some(path) = &self.keys_file {
            text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read the keys file {}: {e}", path.display())
            })?;
            origins.push(path.display().to_string());
        }
        if let Some(keys) = &self.keys {
            text.push('\n');
            text.push_str(keys);
            origins.push("SLUICE_KEYS".to_string());
        }
        let keys = Keys::parse(&text, &origins.join(" + "))?;
        if keys.is_empty() {
            if mode == AuthMode::Auto && open_by_default {
                tracing::warn!(
                    "running open: no API keys are given, so anyone who reaches this port can write and read everything (fine on your own machine; give --keys-file or SLUICE_KEYS before you expose it)"
                );
                return Ok(Arc::new(Keys::open()));
            }
            anyhow::bail!(
                "auth is on and no API keys are given: set --keys-file (SLUICE_KEYS_FILE) or SLUICE_KEYS to lines of `<name> <scopes> sha256:<hex>` (`sluice key` makes them), or --auth off to run open"
            );
        }
        tracing::info!(
            keys = keys.len(),
            rate_limit_per_key = self.rate_limit_per_key,
            "auth is on: REST calls need an API key"
        );
        Ok(Arc::new(keys.with_rate_limit(self.rate_limit_per_key)))
    }
}

/// What the REST services' OpenAPI documents share: the bearer key scheme and the error body.
pub mod openapi {
    use utoipa::Modify;
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

    /// Every error answer of the REST services: what is wrong, in words.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    pub struct ErrorBody {
        pub error: String,
    }

    /// What every keyed route may answer before its handler runs.
    #[derive(utoipa::IntoResponses)]
    #[allow(dead_code)]
    pub enum KeyRefusals {
        /// No key, or one this service does not know.
        #[response(status = 401)]
        Unauthenticated(ErrorBody),
        /// The key's scope does not cover this call.
        #[response(status = 403)]
        Forbidden(ErrorBody),
        /// The key's rate limit is reached; `Retry-After` says when to come back.
        #[response(status = 429)]
        RateLimited(ErrorBody),
    }

    /// Adds the `bearer` security scheme (an API key in `Authorization: Bearer …`).
    pub struct Bearer;

    impl Modify for Bearer {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            openapi
                .components
                .get_or_insert_with(Default::default)
                .add_security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[(&str, &str, &str)]) -> Keys {
        let text: Vec<String> = lines
            .iter()
            .map(|(name, scopes, key)| key_line(name, scopes, key).unwrap())
            .collect();
        Keys::parse(&text.join("\n"), "test").unwrap()
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_key_is_known_by_its_hash_and_keeps_its_scopes() {
        let (writer, reader) = (new_key(), new_key());
        assert_ne!(writer, reader);
        assert_eq!(writer.len(), 67);
        let keys = keys(&[
            ("acme", "write:x,write:y", &writer),
            ("analyst", "read", &reader),
        ]);
        let caller = keys.caller(&bearer(&writer)).unwrap();
        assert_eq!(caller.name(), "acme");
        caller.require_write("x").unwrap();
        caller.require_write("y").unwrap();
        let refused = caller.require_write("instagram").unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.to_string().contains("write:instagram"), "{refused}");
        assert!(refused.to_string().contains("x, y"), "{refused}");
        assert!(caller.require_read().is_err());
        caller.require_read_of("x").unwrap();
        assert!(caller.require_read_of("instagram").is_err());
        assert!(caller.require_admin().is_err());

        let caller = keys.caller(&bearer(&reader)).unwrap();
        assert_eq!(caller.name(), "analyst");
        caller.require_read().unwrap();
        caller.require_read_of("instagram").unwrap();
        assert!(caller.require_write("x").is_err());
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_401() {
        let keys = keys(&[("acme", "write:*", &new_key())]);
        let missing = keys.caller(&HeaderMap::new()).unwrap_err();
        assert!(matches!(missing, AuthError::Missing));
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(keys.caller(&basic), Err(AuthError::Malformed)));
        assert!(matches!(
            keys.caller(&bearer("")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            keys.caller(&bearer(&new_key())),
            Err(AuthError::Unknown)
        ));
        for error in [AuthError::Missing, AuthError::Malformed, AuthError::Unknown] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn open_keys_let_everything_through() {
        let caller = Keys::open().caller(&HeaderMap::new()).unwrap();
        caller.require_write("anything").unwrap();
        caller.require_read().unwrap();
        caller.require_admin().unwrap();
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        let good = key_line("a", "read", "k").unwrap();
        for (text, expected) in [
            ("a read".to_string(), "line 1: expected"),
            (format!("{good}\nb read k"), "line 2: the third field"),
            ("a read sha256:zz".to_string(), "64 hex digits"),
            (
                "a lurk sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .to_string(),
                "unknown scope \"lurk\"",
            ),
            (
                "a write:../etc sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .to_string(),
                "may hold only",
            ),
            (format!("{good}\n{good}"), "taken twice"),
            (
                format!("{good}; {}", key_line("b", "read", "k").unwrap()),
                "listed twice",
            ),
        ] {
            let error = Keys::parse(&text, "keys.txt").unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("keys.txt, line"), "{error}");
        }
        let parsed = Keys::parse(&format!("# comment\n\n{good} # trailing\n"), "f").unwrap();
        assert_eq!(parsed.len(), 1);
    }

    #[test]
    fn auto_is_open_only_where_allowed_and_without_keys() {
        let cluster = |mode| ClusterArgs {
            mode,
            cluster_secret: None,
            cluster_secret_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_auth: false,
            tls_server_name: None,
        };
        let args = |mode, keys: Option<&str>| AuthArgs {
            keys_file: None,
            keys: keys.map(str::to_string),
            rate_limit_per_key: 1000,
            cluster: cluster(mode),
        };
        assert!(args(AuthMode::Auto, None).load(true).unwrap().is_open());
        let error = args(AuthMode::Auto, None).load(false).unwrap_err();
        assert!(error.to_string().contains("no API keys"), "{error}");
        assert!(args(AuthMode::On, None).load(true).is_err());
        assert!(args(AuthMode::Off, None).load(false).unwrap().is_open());
        let line = key_line("a", "read", "k").unwrap();
        let keys = args(AuthMode::Auto, Some(&line)).load(true).unwrap();
        assert!(!keys.is_open());
        assert_eq!(keys.len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, key_line("b", "admin", "k2").unwrap()).unwrap();
        let both = AuthArgs {
            keys_file: Some(file.clone()),
            keys: Some(line),
            rate_limit_per_key: 0,
            cluster: cluster(AuthMode::On),
        }
        .load(false)
        .unwrap();
        assert_eq!(both.len(), 2);

        // The cluster secret: given, made for `sluice all`, absent only when auth is off.
        assert!(cluster(AuthMode::Auto).secret(false).is_err());
        assert!(cluster(AuthMode::On).secret(false).is_err());
        assert_eq!(cluster(AuthMode::Off).secret(false).unwrap(), None);
        let made = cluster(AuthMode::Auto).secret(true).unwrap().unwrap();
        assert_eq!(made.len(), 64);
        assert_ne!(Some(made), cluster(AuthMode::Auto).secret(true).unwrap());
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let given = ClusterArgs {
            cluster_secret_file: Some(file),
            ..cluster(AuthMode::On)
        };
        assert_eq!(
            given.secret(false).unwrap().as_deref(),
            Some("from-a-file-0123456789")
        );
    }

    #[test]
    fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
        let keys =
            keys(&[("busy", "read", "sk_busy"), ("calm", "read", "sk_calm")]).with_rate_limit(2);
        // Bursts of twice the rate pass, the next is refused.
        for _ in 0..4 {
            keys.caller(&bearer("sk_busy")).unwrap();
        }
        let refused = keys.caller(&bearer("sk_busy")).unwrap_err();
        assert!(
            matches!(
                refused,
                AuthError::RateLimited {
                    per_second: 2,
                    retry_after_secs: 1,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(
            refused
                .to_string()
                .contains("more than 2 requests a second")
        );
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        keys.caller(&bearer("sk_calm")).unwrap();
        // An unknown key is refused as unknown, never counted.
        assert!(matches!(
            keys.caller(&bearer("sk_nobody")),
            Err(AuthError::Unknown)
        ));
    }
}

//! `http://` and `https://` sources (`ADD <url>`): one file in a snapshot.
//!
//! With `http.checksum` the key is that digest and nothing is fetched
//! until the vertex must run (the download is then verified against it).
//! Without it the body is fetched to compute the key; the last ETag or
//! Last-Modified date and digest of each URL are remembered, so an
//! unchanged resource answers `304 Not Modified` and is not downloaded
//! again. Bodies live in the content store; a body that fails its checksum
//! or the size cap is dropped with its ingest file.
//!
//! Downloads are bounded (see [`Limits`]): transient failures are retried
//! with exponential backoff, redirects are capped, connecting and stalled
//! reads time out, and the body may not exceed `[sources] http-max-size`
//! of `kiln.toml` (8 GiB by default; `KILN_HTTP_MAX_BYTES` overrides it).
//! `http.authheadersecret` names a session secret sent as the
//! `Authorization` header; `http.header.<Name>` attrs are sent as given.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use kiln_llb::pb;
use kiln_store::Digest;

use super::{OpCtx, Ref, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::solver::{BoxFuture, Input, Op, OpContext, ProgressSink, VertexInfo};

pub(crate) struct HttpOp {
    ctx: OpCtx,
    url: String,
    checksum: Option<Digest>,
    filename: String,
    perm: u32,
    uid: u32,
    gid: u32,
    headers: Vec<(String, String)>,
    auth_secret: Option<String>,
    body: Mutex<Option<Digest>>,
    /// The digest remembered from an earlier download, for explanations.
    previous: Mutex<Option<String>>,
}

impl HttpOp {
    pub(crate) fn new(ctx: OpCtx, src: &pb::SourceOp) -> std::result::Result<HttpOp, String> {
        let url = src.identifier.clone();
        let a = &src.attrs;
        let checksum = match a.get("http.checksum") {
            Some(c) => Some(
                c.parse::<Digest>()
                    .map_err(|e| format!("bad http.checksum {c:?}: {e}"))?,
            ),
            None => None,
        };
        let filename = match a.get("http.filename") {
            Some(f) if !f.is_empty() => f.clone(),
            _ => url
                .split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|s| !s.is_empty() && !s.contains(':'))
                .unwrap_or("index")
                .to_owned(),
        };
        if filename.contains('/') || filename == ".." || filename == "." {
            return Err(format!("bad http.filename {filename:?}"));
        }
        let perm = match a.get("http.perm") {
            Some(p) => u32::from_str_radix(p.trim_start_matches("0o"), 8)
                .map_err(|_| format!("bad http.perm {p:?}"))?,
            None => 0o600,
        };
        let num = |k: &str| -> std::result::Result<u32, String> {
            a.get(k)
                .map_or(Ok(0), |v| v.parse().map_err(|_| format!("bad {k} {v:?}")))
        };
        let headers = a
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("http.header.")
                    .map(|h| (h.to_owned(), v.clone()))
            })
            .collect();
        Ok(HttpOp {
            ctx,
            url,
            checksum,
            filename,
            perm: perm & 0o7777,
            uid: num("http.uid")?,
            gid: num("http.gid")?,
            headers,
            auth_secret: a.get("http.authheadersecret").cloned(),
            body: Mutex::new(None),
            previous: Mutex::new(None),
        })
    }

    fn key(&self, content: &Digest) -> CacheKey {
        KeyBuilder::new("source.http")
            .str(content.as_str())
            .str(&self.filename)
            .u64(self.perm as u64)
            .u64(self.uid as u64)
            .u64(self.gid as u64)
            .finish()
    }

    /// Fetches the body into the content store (or finds it unchanged),
    /// retrying transient failures (connection errors, timeouts, 5xx, 429)
    /// with exponential backoff.
    async fn fetch(&self, cx: &OpContext) -> Result<Digest> {
        let limits = Limits::new(self.ctx.worker.http_max_bytes)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_once(&limits).await {
                Ok((d, bytes)) => {
                    let line = match bytes {
                        Some(n) => format!("downloaded {n} bytes from {}: {d}", self.url),
                        None => format!("{} not modified: {d}", self.url),
                    };
                    let v = VertexInfo {
                        digest: cx.digest.clone(),
                        name: cx.name.clone(),
                        inputs: Vec::new(),
                    };
                    self.ctx.session.progress.log(&v, &line);
                    return Ok(d);
                }
                Err(Fetch::Fatal(e)) => return Err(e),
                Err(Fetch::Transient(e)) if attempt >= limits.attempts => {
                    return Err(e.context(format!("fetching {} failed {attempt} times", self.url)));
                }
                Err(Fetch::Transient(e)) => {
                    let wait = limits.backoff * 2u32.pow(attempt - 1);
                    tracing::warn!(url = %self.url, attempt, error = %format!("{e:#}"), "retrying download");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt: the body's digest, and its size if it was downloaded
    /// (`None`: not modified).
    async fn fetch_once(
        &self,
        limits: &Limits,
    ) -> std::result::Result<(Digest, Option<u64>), Fetch> {
        let worker = &self.ctx.worker;
        let fact = format!("http.v1:{}", self.url);
        let known: Option<Validators> = worker
            .records
            .kv_get(&fact)
            .map_err(Fetch::Fatal)?
            .and_then(|s| serde_json::from_str::<Validators>(&s).ok())
            .filter(|v| {
                v.digest
                    .parse::<Digest>()
                    .is_ok_and(|d| worker.content.exists(&d))
            });
        if let Some(k) = &known {
            *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some(k.digest.clone());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.read_timeout)
            .build()
            .context("setting up the HTTP client")
            .map_err(Fetch::Fatal)?;
        let mut req = client.get(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(id) = &self.auth_secret {
            let secret = self
                .ctx
                .session
                .secrets
                .get(id)
                .await
                .map_err(Fetch::Fatal)?
                .with_context(|| {
                    format!("secret {id:?} (http.authheadersecret) is not provided by the session")
                })
                .map_err(Fetch::Fatal)?;
            let mut v = reqwest::header::HeaderValue::from_bytes(secret.trim_ascii_end()).map_err(
                |_| {
                    Fetch::Fatal(anyhow::anyhow!(
                        "secret {id:?} (http.authheadersecret) is not a valid header value"
                    ))
                },
            )?;
            v.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, v);
        }
        if let (None, Some(k)) = (&self.checksum, &known) {
            if let Some(etag) = &k.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
            } else if let Some(lm) = &k.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm.as_str());
            }
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_redirect() || e.is_builder() => {
                return Err(Fetch::Fatal(
                    anyhow::Error::new(e).context(format!("fetching {}", self.url)),
                ));
            }
            Err(e) => {
                return Err(Fetch::Transient(
                    anyhow::Error::new(e).context(format!("fetching {}", self.url)),
                ));
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED
            && let Some(k) = known
        {
            let d = k
                .digest
                .parse()
                .context("remembered digest")
                .map_err(Fetch::Fatal)?;
            return Ok((d, None));
        }
        if !status.is_success() {
            let e = anyhow::anyhow!("fetching {}: HTTP {status}", self.url);
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Fetch::Transient(e)
                } else {
                    Fetch::Fatal(e)
                },
            );
        }
        let too_big = |n: u64| {
            Fetch::Fatal(anyhow::anyhow!(
                "{}: the body ({n} bytes or more) is larger than the download limit of {} bytes \
                 (raise http-max-size in the [sources] of kiln.toml in the state dir, or set \
                 {MAX_BYTES_ENV})",
                self.url,
                limits.max_bytes
            ))
        };
        if let Some(n) = resp.content_length()
            && n > limits.max_bytes
        {
            return Err(too_big(n));
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let mut w = worker
            .content
            .writer()
            .context("opening a content store writer")
            .map_err(Fetch::Fatal)?;
        let mut size = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(Fetch::Transient(
                        anyhow::Error::new(e).context(format!("reading {}", self.url)),
                    ));
                }
            };
            size += chunk.len() as u64;
            if size > limits.max_bytes {
                return Err(too_big(size));
            }
            w.write_all(&chunk)
                .context("writing into the content store")
                .map_err(Fetch::Fatal)?;
        }
        let (digest, _) = w
            .commit(self.checksum.as_ref())
            .with_context(|| format!("content of {} does not match its checksum", self.url))
            .map_err(Fetch::Fatal)?;
        if etag.is_some() || last_modified.is_some() {
            let v = Validators {
                etag,
                last_modified,
                digest: digest.to_string(),
            };
            let json = serde_json::to_string(&v)
                .context("encoding validators")
                .map_err(Fetch::Fatal)?;
            worker.records.kv_put(&fact, &json).map_err(Fetch::Fatal)?;
        }
        Ok((digest, Some(size)))
    }
}

/// Redirects followed before a download fails (a loop ends here).
const MAX_REDIRECTS: usize = 10;

/// Environment variable holding the download size cap in bytes.
pub(crate) const MAX_BYTES_ENV: &str = "KILN_HTTP_MAX_BYTES";

/// Limits of one download.
struct Limits {
    max_bytes: u64,
    attempts: u32,
    backoff: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Limits {
    /// Defaults: 8 GiB (or `configured`, from `kiln.toml`), 4 attempts
    /// from 500 ms backoff, 30 s to connect and 120 s without a byte.
    /// `KILN_HTTP_MAX_BYTES` overrides the size cap.
    fn new(configured: Option<u64>) -> Result<Limits> {
        let max_bytes = match std::env::var(MAX_BYTES_ENV) {
            Ok(v) => v
                .trim()
                .parse()
                .with_context(|| format!("{MAX_BYTES_ENV}={v:?} is not a number of bytes"))?,
            Err(_) => configured.unwrap_or(8 << 30),
        };
        Ok(Limits {
            max_bytes,
            attempts: 4,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        })
    }
}

/// Why one attempt failed: worth another try, or not.
enum Fetch {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

/// What a server said about the body last time, for revalidation; stored
/// as JSON under `http.v1:<url>`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
    digest: String,
}

impl Op<Ref> for HttpOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            if let Some(c) = &self.checksum {
                return Ok(self.key(c));
            }
            let d = self.fetch(cx).await?;
            let key = self.key(&d);
            *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
            Ok(key)
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let now = self
                .body
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|d| d.to_string());
            let before = self
                .previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match (&self.checksum, before, now) {
                (Some(c), _, _) => format!("no record for {} with checksum {c}", self.url),
                (None, Some(b), Some(n)) if b != n => {
                    format!("content of {} changed from {b} to {n}", self.url)
                }
                (None, _, n) => format!(
                    "no record for {} with content {}",
                    self.url,
                    n.unwrap_or_default()
                ),
            }
        })
    }

    fn execute<'a>(
        &'a self,
        cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let known = self.body.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // The body found while keying may have been collected since
            // (it is an unreferenced blob): fetch it again then.
            let digest = match known {
                Some(d) if self.ctx.worker.content.exists(&d) => d,
                _ => match &self.checksum {
                    Some(c) if self.ctx.worker.content.exists(c) => c.clone(),
                    _ => self.fetch(cx).await?,
                },
            };
            let worker = self.ctx.worker.clone();
            let (filename, perm, uid, gid) = (self.filename.clone(), self.perm, self.uid, self.gid);
            let id = blocking(move || {
                let scratch = worker.snapshots.scratch_dir()?;
                let r = (|| {
                    let dst = scratch.join(&filename);
                    let mut src = worker.content.open(&digest)?;
                    let mut f = fs_err::File::create(&dst)?;
                    std::io::copy(&mut src, &mut f).context("writing the downloaded file")?;
                    drop(f);
                    fs_err::set_permissions(&dst, std::fs::Permissions::from_mode(perm))?;
                    fsutil::lchown(&dst, uid, gid)?;
                    Ok(worker.snapshots.commit_diff_dir_move(&scratch, None)?)
                })();
                if r.is_err()
                    && let Some(p) = scratch.parent()
                {
                    let _ = std::fs::remove_dir_all(p);
                }
                r
            })
            .await?;
            Ok(vec![Ref(Some(id))])
        })
    }
}

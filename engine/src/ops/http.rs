//! `http://` and `https://` sources (`ADD <url>`): one file in a snapshot.
//!
//! With `http.checksum` the key is that digest and nothing is fetched
//! until the vertex must run (the download is then verified against it).
//! Without it the body is fetched to compute the key; the last ETag and
//! digest of each URL are remembered, so an unchanged resource answers
//! `304 Not Modified` and is not downloaded again. Bodies live in the
//! content store.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use kiln_llb::pb;
use kiln_store::Digest;

use super::{OpCtx, Ref, blocking};
use crate::cachekey::{CacheKey, KeyBuilder};
use crate::fsutil;
use crate::solver::{BoxFuture, Input, Op, OpContext};

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

    /// Fetches the body into the content store (or finds it unchanged).
    async fn fetch(&self) -> Result<Digest> {
        let worker = &self.ctx.worker;
        let fact = format!("http:{}", self.url);
        let known: Option<(String, Digest)> = worker
            .records
            .kv_get(&fact)?
            .and_then(|s| {
                let (etag, d) = s.rsplit_once(' ')?;
                Some((etag.to_owned(), d.parse().ok()?))
            })
            .filter(|(_, d)| worker.content.exists(d));
        let client = reqwest::Client::new();
        let mut req = client.get(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(id) = &self.auth_secret {
            let secret = self.ctx.session.secrets.get(id).with_context(|| {
                format!("secret {id:?} (http.authheadersecret) is not provided by the session")
            })?;
            req = req.header(
                "Authorization",
                String::from_utf8_lossy(secret).into_owned(),
            );
        }
        if let (None, Some((etag, _))) = (&self.checksum, &known) {
            req = req.header("If-None-Match", etag.as_str());
        }
        let mut resp = req
            .send()
            .await
            .with_context(|| format!("fetching {}", self.url))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED
            && let Some((_, d)) = known
        {
            return Ok(d);
        }
        if !resp.status().is_success() {
            bail!("fetching {}: HTTP {}", self.url, resp.status());
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut w = worker.content.writer()?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading {}", self.url))?
        {
            w.write_all(&chunk)
                .context("writing into the content store")?;
        }
        let (digest, _) = w
            .commit(self.checksum.as_ref())
            .with_context(|| format!("content of {} does not match its checksum", self.url))?;
        if let Some(etag) = etag {
            worker.records.kv_put(&fact, &format!("{etag} {digest}"))?;
        }
        Ok(digest)
    }
}

impl Op<Ref> for HttpOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            if let Some(c) = &self.checksum {
                return Ok(self.key(c));
            }
            let d = self.fetch().await?;
            let key = self.key(&d);
            *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
            Ok(key)
        })
    }

    fn execute<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let known = self.body.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let digest = match known {
                Some(d) => d,
                None => match &self.checksum {
                    Some(c) if self.ctx.worker.content.exists(c) => c.clone(),
                    _ => self.fetch().await?,
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

//! DiffOp: the changes that turn the lower input into the upper one, as a
//! snapshot on its own (deletions are kept as whiteouts, so exporting it
//! gives the layer BuildKit would).

use anyhow::Result;
use kiln_llb::pb;

use super::{OpCtx, Ref, blocking, explain, inputs_key, remember};
use crate::cachekey::CacheKey;
use crate::records::KeyParts;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct DiffOp {
    ctx: OpCtx,
    lower: Option<usize>,
    upper: Option<usize>,
    parts: std::sync::Mutex<Option<KeyParts>>,
}

fn idx(v: Option<i64>, n: usize, what: &str) -> std::result::Result<Option<usize>, String> {
    match v {
        None => Ok(None),
        Some(i) if i < 0 => Ok(None),
        Some(i) if (i as usize) < n => Ok(Some(i as usize)),
        Some(i) => Err(format!(
            "diff {what} refers to input {i}, which does not exist"
        )),
    }
}

impl DiffOp {
    pub(crate) fn new(
        ctx: OpCtx,
        d: &pb::DiffOp,
        n_inputs: usize,
    ) -> std::result::Result<DiffOp, String> {
        Ok(DiffOp {
            ctx,
            lower: idx(d.lower.as_ref().map(|l| l.input), n_inputs, "lower")?,
            upper: idx(d.upper.as_ref().map(|u| u.input), n_inputs, "upper")?,
            parts: std::sync::Mutex::new(None),
        })
    }
}

impl Op<Ref> for DiffOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move { Ok(inputs_key(&self.ctx, "diff", inputs, &self.parts)) })
    }

    fn execute<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let worker = self.ctx.worker.clone();
            let lower = self
                .lower
                .map(|i| inputs[i].result.clone())
                .unwrap_or(Ref(None));
            let upper = self
                .upper
                .map(|i| inputs[i].result.clone())
                .unwrap_or(Ref(None));
            if upper.0.is_none() {
                return Ok(vec![Ref(None)]);
            }
            if lower == upper {
                return Ok(vec![Ref(None)]);
            }
            let id = blocking(move || {
                let lv = worker.view(&lower)?;
                let uv = worker.view(&upper)?;
                let scratch = worker.snapshots.scratch_dir()?;
                let r = (|| {
                    kiln_store::snapshot::diff_trees(&lv, &uv, &scratch)?;
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

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move { explain(&self.ctx, "diff", &self.parts, inputs) })
    }

    fn after_solve(&self, _key: &CacheKey, inputs: &[Input<Ref>]) {
        remember(&self.ctx, "diff", &self.parts, inputs);
    }
}

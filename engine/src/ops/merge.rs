//! MergeOp: the union of its inputs, later inputs winning on conflicts.
//!
//! Built as a copy-mode snapshot on the first input with every later
//! input's merged view copied over it, so the result exports as the first
//! input's layers plus one layer with the rest.

use anyhow::Result;
use kiln_llb::pb;

use super::{OpCtx, Ref, blocking, explain, inputs_key, remember};
use crate::cachekey::CacheKey;
use crate::fsutil;
use crate::records::KeyParts;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct MergeOp {
    ctx: OpCtx,
    inputs: Vec<usize>,
    parts: std::sync::Mutex<Option<KeyParts>>,
}

impl MergeOp {
    pub(crate) fn new(
        ctx: OpCtx,
        m: &pb::MergeOp,
        n_inputs: usize,
    ) -> std::result::Result<MergeOp, String> {
        let mut inputs = Vec::new();
        for (i, mi) in m.inputs.iter().enumerate() {
            if mi.input < 0 || mi.input as usize >= n_inputs {
                return Err(format!(
                    "merge input {i} refers to input {}, which does not exist",
                    mi.input
                ));
            }
            inputs.push(mi.input as usize);
        }
        if inputs.is_empty() {
            return Err("merge op has no inputs".into());
        }
        Ok(MergeOp {
            ctx,
            inputs,
            parts: std::sync::Mutex::new(None),
        })
    }
}

impl Op<Ref> for MergeOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move { Ok(inputs_key(&self.ctx, "merge", inputs, &self.parts)) })
    }

    fn execute<'a>(
        &'a self,
        _cx: &'a OpContext,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move {
            let worker = self.ctx.worker.clone();
            let refs: Vec<Ref> = self
                .inputs
                .iter()
                .map(|&i| inputs[i].result.clone())
                .collect();
            let id = blocking(move || {
                let first = refs[0].clone();
                if refs[1..].iter().all(|r| r.0.is_none()) {
                    return Ok(first.0);
                }
                let active = worker.snapshots.prepare_copy(first.0.as_ref())?;
                let r = (|| {
                    for r in &refs[1..] {
                        let v = worker.view(r)?;
                        fsutil::merge_into(&v, &active.root())?;
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => Ok(Some(worker.snapshots.commit(active)?)),
                    Err(e) => {
                        let _ = worker.snapshots.abort(active);
                        Err(e)
                    }
                }
            })
            .await?;
            Ok(vec![Ref(id)])
        })
    }

    fn explain_miss<'a>(
        &'a self,
        _key: &'a CacheKey,
        inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, String> {
        Box::pin(async move { explain(&self.ctx, "merge", &self.parts, inputs) })
    }

    fn after_solve(&self, _key: &CacheKey, inputs: &[Input<Ref>]) {
        remember(&self.ctx, "merge", &self.parts, inputs);
    }
}

//! `docker-image://` and `oci-layout://` sources.

use anyhow::{Result, bail};
use kiln_llb::pb;

use super::{OpCtx, Ref};
use crate::cachekey::CacheKey;
use crate::solver::{BoxFuture, Input, Op, OpContext};

pub(crate) struct ImageOp {
    ctx: OpCtx,
    identifier: String,
}

impl ImageOp {
    pub(crate) fn new(
        ctx: OpCtx,
        src: &pb::SourceOp,
        _platform: Option<pb::Platform>,
    ) -> std::result::Result<ImageOp, String> {
        Ok(ImageOp {
            ctx,
            identifier: src.identifier.clone(),
        })
    }
}

impl Op<Ref> for ImageOp {
    fn outputs(&self) -> usize {
        1
    }

    fn cache_key<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<CacheKey>> {
        Box::pin(async move {
            let _ = &self.ctx;
            bail!("image sources are not supported yet ({})", self.identifier)
        })
    }

    fn execute<'a>(
        &'a self,
        _cx: &'a OpContext,
        _inputs: &'a [Input<Ref>],
    ) -> BoxFuture<'a, Result<Vec<Ref>>> {
        Box::pin(async move { bail!("image sources are not supported yet ({})", self.identifier) })
    }
}

//! `Engine::export`: hands the result's snapshot chain to an exporter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_store::SnapshotId;

use crate::engine::ExportResult;
use crate::fsutil;
use crate::ops::{Ref, Worker, blocking};
use crate::session::Session;

pub(crate) async fn export(
    worker: &Arc<Worker>,
    snapshot: Option<SnapshotId>,
    _image_config: Option<&[u8]>,
    output_type: &str,
    attrs: &BTreeMap<String, String>,
    _session: Arc<Session>,
) -> Result<ExportResult> {
    match output_type {
        "local" => {
            let dest = PathBuf::from(attrs.get("dest").context("local export needs dest=")?);
            let worker = worker.clone();
            blocking(move || {
                let view = worker.view(&Ref(snapshot))?;
                fs_err::create_dir_all(&dest)?;
                fsutil::merge_into(&view, &dest)?;
                Ok(ExportResult::default())
            })
            .await
        }
        other => bail!("exporter {other:?} is not available"),
    }
}

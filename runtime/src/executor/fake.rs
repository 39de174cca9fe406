//! An executor for tests that have no root or no runc: a closure decides
//! what each run prints and how it ends, and every request is recorded.

use std::sync::Mutex;

use super::{CancelToken, Error, ExecOutcome, ExecRequest, Executor, OutputSink, Result};

type RunFn = dyn Fn(&ExecRequest, &mut dyn OutputSink) -> Result<i32> + Send + Sync;

/// Runs nothing: calls a closure that may write output and returns an exit
/// code, which is turned into an outcome or [`Error::ExitCode`] like
/// [`RuncExecutor`](super::RuncExecutor) does. Canceled tokens give
/// [`Error::Canceled`] without calling the closure.
pub struct FnExecutor {
    run: Box<RunFn>,
    calls: Mutex<Vec<ExecRequest>>,
}

impl std::fmt::Debug for FnExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnExecutor").finish_non_exhaustive()
    }
}

impl FnExecutor {
    /// An executor whose runs are decided by `run`.
    pub fn new(
        run: impl Fn(&ExecRequest, &mut dyn OutputSink) -> Result<i32> + Send + Sync + 'static,
    ) -> Self {
        Self {
            run: Box::new(run),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every request seen so far, in order.
    pub fn calls(&self) -> Vec<ExecRequest> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Executor for FnExecutor {
    fn run(
        &self,
        req: &ExecRequest,
        output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExecOutcome> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.push(req.clone());
            calls.len()
        };
        let container_id = format!("fake-{n}");
        if cancel.is_canceled() {
            return Err(Error::Canceled {
                container_id,
                argv: req.process.args.clone(),
            });
        }
        match (self.run)(req, output)? {
            0 => Ok(ExecOutcome {
                container_id,
                exit_code: 0,
            }),
            code => Err(Error::ExitCode {
                container_id,
                argv: req.process.args.clone(),
                code,
                output_tail: String::new(),
            }),
        }
    }
}

impl<T: Executor + ?Sized> Executor for std::sync::Arc<T> {
    fn run(
        &self,
        req: &ExecRequest,
        output: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExecOutcome> {
        (**self).run(req, output, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CapturedOutput, Rootfs, StreamKind};
    use super::*;

    #[test]
    fn fake_records_and_maps_exit_codes() {
        let exec = FnExecutor::new(|req, out| {
            out.write(StreamKind::Stdout, req.process.args.join(" ").as_bytes());
            Ok(if req.process.args[0] == "false" { 1 } else { 0 })
        });
        let mut out = CapturedOutput::default();
        let ok = ExecRequest::new(Rootfs::Dir("/".into()), vec!["echo".into(), "hi".into()]);
        exec.run(&ok, &mut out, &CancelToken::new()).unwrap();
        assert_eq!(out.stdout_text(), "echo hi");
        let bad = ExecRequest::new(Rootfs::Dir("/".into()), vec!["false".into()]);
        let e = exec.run(&bad, &mut out, &CancelToken::new()).unwrap_err();
        assert!(matches!(e, Error::ExitCode { code: 1, .. }));
        let c = CancelToken::new();
        c.cancel();
        assert!(matches!(
            exec.run(&ok, &mut out, &c),
            Err(Error::Canceled { .. })
        ));
        assert_eq!(exec.calls().len(), 3);
        let shared: std::sync::Arc<dyn Executor> = std::sync::Arc::new(exec);
        shared.run(&ok, &mut out, &CancelToken::new()).unwrap();
    }
}

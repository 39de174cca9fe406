//! `hello`: the smallest useful kiln frontend.
//!
//! It reads `hello.txt` from the `context` local (or the file named by
//! `--opt file=`), and returns an image that holds it as `/hello.txt`, with
//! an image config whose `Cmd` prints it.

use kiln_frontend::llb::builder::{MarshalOptions, MkfileOptions, local, mkfile, scratch};
use kiln_frontend::{BuildResult, Frontend, FrontendError, Gateway, Location, options_map};

/// The frontend.
pub struct Hello;

impl Frontend for Hello {
    fn build(gw: &dyn Gateway) -> Result<BuildResult, FrontendError> {
        let opts = options_map(gw);
        let file = opts.get("file").cloned().unwrap_or_else(|| "hello.txt".to_string());

        // Solve the `context` local, then read one file of it.
        let context = local("context").state();
        let handle = gw.solve(&context.marshal_to_vec(&MarshalOptions::default())?, true)?;
        let text = gw.read_file(&handle, &file, 0, None)?;
        if text.is_empty() {
            // Errors can point at the user's input.
            return Err(FrontendError::at(format!("{file} is empty"), Location::line(&file, 1)));
        }
        gw.log(&format!("hello: {} bytes from {file}", text.len()));

        // Build the result: scratch plus one file.
        let image = scratch().file(mkfile("/hello.txt", 0o644, text, MkfileOptions::default()));
        let result = gw.solve(&image.marshal_to_vec(&MarshalOptions::default())?, false)?;

        let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hello.txt"]}}"#;
        Ok(BuildResult::single(result).with_image_config(config.to_vec()))
    }
}

kiln_frontend::export_frontend!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_frontend::testing::MockGateway;

    #[test]
    fn reads_the_file_and_returns_an_image() {
        let gw = MockGateway::new().with_file("context", "hello.txt", b"hi\n");
        let out = Hello::build(&gw).expect("build");
        assert_eq!(out.refs.len(), 1);
        assert!(out.metadata.iter().any(|(k, _)| k == "containerimage.config"));
        assert_eq!(gw.solved().len(), 2);
    }

    #[test]
    fn an_empty_file_is_an_error_with_a_location() {
        let gw = MockGateway::new().with_file("context", "hello.txt", b"");
        let err = Hello::build(&gw).unwrap_err();
        assert_eq!(err.location.unwrap().start_line, 1);
    }
}

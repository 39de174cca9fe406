//! placeholder
pub(crate) fn go_json_escape(s: &str) -> String {
    s.to_owned()
}

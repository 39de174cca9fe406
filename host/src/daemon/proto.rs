//! The generated types, client and server of `proto/control.proto`
//! (`kiln.control.v1`), shared by the daemon and the remote client.

#![expect(missing_docs, reason = "generated")]
#![expect(
    clippy::large_enum_variant,
    reason = "generated: Start is sent once per build"
)]

tonic::include_proto!("kiln.control.v1");

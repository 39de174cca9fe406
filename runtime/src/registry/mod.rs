//! OCI distribution client.

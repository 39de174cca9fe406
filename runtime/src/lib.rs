//! Container execution through an OCI runtime, and the registry client.

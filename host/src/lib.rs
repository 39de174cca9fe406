//! kiln: a build engine in the BuildKit mould whose frontends are
//! WebAssembly components.

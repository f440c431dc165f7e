//! The cosigner v1 gRPC API: generated message types, client and server stubs, and the
//! encoded file descriptor set that the daemon serves through gRPC reflection.
//!
//! The `.proto` files under `proto/cosigner/v1/` are the source of truth; this crate only
//! compiles them, so every binary (daemon, CLI, tests) speaks exactly the same API. The
//! stubs need the `grpc` feature (on by default); without it the crate is messages only.

/// Everything in the `cosigner.v1` protobuf package.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    include!(concat!(env!("OUT_DIR"), "/cosigner.v1.rs"));
}

/// Encoded `FileDescriptorSet` of the whole v1 API, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cosigner_v1_descriptor.bin"));

/// Fully-qualified gRPC service names, as clients and the auth layer see them.
pub const COSIGNER_SERVICE: &str = "cosigner.v1.Cosigner";
pub const RELAY_SERVICE: &str = "cosigner.v1.Relay";

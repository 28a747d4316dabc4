//! The otpd.v1 gRPC contract: messages, client and server stubs.
//!
//! The `.proto` file in `proto/otpd/v1/` is the documentation of the API.

#![allow(missing_docs, clippy::all)]

/// Package `otpd.v1`.
pub mod v1 {
    tonic::include_proto!("otpd.v1");
}

//! `strata-proto` will own the `.proto` files of the admin and cluster APIs and the tonic/prost
//! code built from them at compile time (with protox, so no system `protoc` is needed).
//! Nothing is implemented yet; this crate only fixes the workspace layout, and exports nothing.

//! The stage runtime: stages, runners, threading modes and the engine builder. Empty so far: the
//! data path in (the `shm` crate and the `tickpipe` tools) comes first.
#![forbid(unsafe_code)]

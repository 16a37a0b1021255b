//! The single integration-test binary: real binaries, real MTAs, real corpora.

//! storage (being built).

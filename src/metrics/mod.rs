//! metrics (being built).

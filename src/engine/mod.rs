//! engine (being built).

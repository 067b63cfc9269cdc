//! bencode (being built).

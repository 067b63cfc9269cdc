//! The seedable PRNG lives in the library (the download engine needs it for
//! its tie-breaks); re-exported here for the flood leechers.

pub use ringseed::swarm::download::rng::Rng;

//! swarm (being built).

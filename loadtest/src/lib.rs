//! ringseed-loadtest: synthetic BitTorrent leechers that flood a seeder and
//! measure it. Filled in by the load-generator issue.

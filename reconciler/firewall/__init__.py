"""Our nftables: declarations (`decl`), our tables and what the spec puts in them (`layout`)."""

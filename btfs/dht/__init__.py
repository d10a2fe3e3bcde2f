"""The DHT (BEP 5, BEP 32): pure protocol cores (codec, routing table, lookups, storage,
the node) fed datagrams and the time; a trio shell does the UDP I/O."""

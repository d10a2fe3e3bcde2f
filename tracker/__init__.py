"""btfs-tracker: the BitTorrent tracker service (HTTP and UDP) shipped with btfs."""

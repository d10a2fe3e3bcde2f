"""btfs: a BitTorrent client that mounts a torrent as a read-only streaming filesystem."""

__version__ = "0.1.0"

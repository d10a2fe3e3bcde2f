"""Tracker protocol pieces shared by the client (`btfs.trackers`) and the tracker service
(`tracker/`): announce event names, compact peer addresses, BEP 15 packets.

Pure: bytes and values in, bytes and values out; no trio, no sockets, no files. This
package is the only part of `btfs` that `tracker/` imports besides `btfs.errors`,
`btfs.bencode` and `btfs.sdnotify`.
"""

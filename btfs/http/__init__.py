"""HTTP streaming of a mount's torrents: files with Range, M3U playlists, a JSON API, a web page.

`server` runs hypercorn's HTTP/1.1 and HTTP/2 protocol code on the mount's trio loop; `app` is
the ASGI application; `catalog` is what it needs of the mount. The rest is pure: Range
headers (`ranges`), content types and playlists (`media`), URL paths (`paths`), the JSON
(`views`), the options and the token (`options`).
"""

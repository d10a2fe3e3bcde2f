"""Content types by file extension, and M3U playlists. Pure.

A fixed table rather than `mimetypes`, whose answers depend on the machine's
/etc/mime.types: a player told `application/octet-stream` for a .mkv may refuse it.
Types a browser would run (HTML, SVG, XML, JavaScript) are served as plain text: a
torrent's files are not the page's to script (the responses also carry a CSP sandbox).
"""

from __future__ import annotations

from urllib.parse import quote

TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".mov": "video/quicktime", ".avi": "video/x-msvideo",
    ".ts": "video/mp2t", ".m2ts": "video/mp2t", ".mpg": "video/mpeg", ".mpeg": "video/mpeg",
    ".wmv": "video/x-ms-wmv", ".flv": "video/x-flv", ".ogv": "video/ogg", ".3gp": "video/3gpp",
    ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".aac": "audio/aac", ".flac": "audio/flac",
    ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".wav": "audio/wav",
    ".wma": "audio/x-ms-wma", ".mka": "audio/x-matroska",
    ".srt": "application/x-subrip", ".vtt": "text/vtt", ".ass": "text/x-ssa",
    ".ssa": "text/x-ssa", ".sub": "text/plain; charset=utf-8",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
    ".webp": "image/webp", ".bmp": "image/bmp",
    ".txt": "text/plain; charset=utf-8", ".nfo": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
    ".html": "text/plain; charset=utf-8", ".htm": "text/plain; charset=utf-8",
    ".svg": "text/plain; charset=utf-8", ".xml": "text/plain; charset=utf-8",
    ".js": "text/plain; charset=utf-8",
    ".pdf": "application/pdf", ".zip": "application/zip", ".epub": "application/epub+zip",
    ".torrent": "application/x-bittorrent", ".iso": "application/octet-stream",
}
DEFAULT_TYPE = "application/octet-stream"


def content_type(name: str) -> str:
    dot = name.rfind(".")
    return TYPES.get(name[dot:].lower(), DEFAULT_TYPE) if dot > 0 else DEFAULT_TYPE


def is_media(name: str) -> bool:
    return content_type(name).startswith(("video/", "audio/"))


def url_path(info_hash_hex: str, path: tuple[str, ...]) -> str:
    """The URL path of a torrent's file: each name percent-encoded, nothing left as is."""
    return f"/t/{info_hash_hex}/" + "/".join(quote(part, safe="") for part in path)


def with_token(url: str, token: str | None) -> str:
    return url if token is None else f"{url}?token={quote(token, safe='')}"


def m3u(entries: list[tuple[str, str]]) -> str:
    """An extended M3U playlist of (title, absolute URL); titles lose their line breaks."""
    lines = ["#EXTM3U"]
    for title, url in entries:
        clean = " ".join(title.split()).replace(",", " ")
        lines += [f"#EXTINF:-1,{clean}", url]
    return "\n".join(lines) + "\n"

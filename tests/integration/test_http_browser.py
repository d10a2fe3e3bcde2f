"""The web page in a real browser (headless Chromium): the torrents and their files, a
click that plays a file in the page's <video>, a magnet added through the form."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from btfs.metainfo import load_torrent
from tests.support.browser import chromium, wait
from tests.support.data import make_random_file
from tests.support.env import require_libtorrent
from tests.support.httpserve import MemoryLibrary, make_media_webm, serving
from tests.support.mounting import mount_swarm
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Mounts, Processes
from tests.support.swarm import wait_for_line

pytestmark = [pytest.mark.slow]

SCREENSHOT = "page.png"


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def play_and_watch_time_advance(driver: Any, file_name: str) -> float:
    """Click the file's Play button; the <video>'s currentTime once it passed 1.5 s."""
    rows = wait(driver, lambda d: [r for r in by_css(d, "tr") if file_name in r.text],
                f"a row for {file_name}")
    rows[0].find_elements("css selector", "button.play")[0].click()
    wait(driver, lambda d: d.execute_script(
        "const v = document.getElementById('video');"
        "return v.currentTime > 1.5 && !v.paused && v.readyState >= 3;"),
        "the video playing past 1.5 s")
    current: float = driver.execute_script("return document.getElementById('video').currentTime")
    error = driver.execute_script("const v = document.getElementById('video');"
                                  "return v.error && v.error.message")
    assert error is None
    return current


def add_magnet(driver: Any, magnet: str) -> None:
    field = by_css(driver, "#magnet")[0]
    field.clear()
    field.send_keys(magnet)
    by_css(driver, "#add-magnet button[type=submit]")[0].click()


def browse_library(tmp_path: Path, port: int, clip_hash: str, other_hash: str) -> None:
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        wait(driver, lambda d: by_css(d, f"section.torrent[data-hash='{clip_hash}']"),
             "the torrent")
        assert "clip.webm" in by_css(driver, "section.torrent")[0].text
        assert play_and_watch_time_advance(driver, "clip.webm") > 1.5
        add_magnet(driver, f"magnet:?xt=urn:btih:{other_hash}&dn=notes")
        wait(driver, lambda d: by_css(d, f"section.torrent[data-hash='{other_hash}']"),
             "the added torrent")
        wait(driver, lambda d: "readme.txt" in d.page_source, "the added torrent's file")
        add_magnet(driver, "magnet:?xt=urn:btih:nothex")
        wait(driver, lambda d: "cannot add" in by_css(d, "#message.error")[0].text
             if by_css(d, "#message.error") else False, "the error of a bad magnet")
        driver.save_screenshot(str(tmp_path / SCREENSHOT))
        section = by_css(driver, f"section.torrent[data-hash='{other_hash}']")[0]
        section.find_elements("css selector", "button.remove")[0].click()
        wait(driver, lambda d: not by_css(d, f"section.torrent[data-hash='{other_hash}']"),
             "the removed torrent gone")


async def test_page_plays_and_adds_in_a_library(tmp_path: Path) -> None:
    library = MemoryLibrary(tmp_path / "cache")
    clip = await trio.to_thread.run_sync(make_media_webm, tmp_path / "a" / "clip.webm")
    notes = make_random_file(tmp_path / "b" / "readme.txt", 5000, seed=2)
    clip_meta = library.know(clip, piece_length=16384)
    other = library.know(notes)
    await library.add(f"magnet:?xt=urn:btih:{clip_meta.info_hash_hex}")
    async with serving(library) as port:
        await trio.to_thread.run_sync(browse_library, tmp_path, port,
                                      clip_meta.info_hash_hex, other.info_hash_hex)
    assert (tmp_path / SCREENSHOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(library.served) == [clip_meta.info_hash_hex]


def test_page_of_a_mount_plays_from_the_swarm(tmp_path: Path, procs: Processes,
                                               mounts: Mounts) -> None:
    """A mount of a folder fetched lazily from a seeder capped at 1 MiB/s: the page shows
    each file's verified pieces as they come while the clip plays."""
    require_libtorrent()
    folder = tmp_path / "origin" / "Show"
    clip = make_media_webm(folder / "clip.webm", seconds=30, size="640x360", bitrate="1M")
    make_random_file(folder / "extras" / "notes.txt", 3_000_000, seed=4)
    from btfs.create import CreateOptions, make_torrent

    torrent = tmp_path / "show.torrent"
    torrent.write_bytes(make_torrent(folder, CreateOptions(piece_length=32768)))
    host = next_loopback_ipv4()
    seed_port = free_port(host)
    seeder = procs.start([sys.executable, "-m", "tests.support.ltpeer", "seed", torrent,
                          folder.parent, "--listen", f"{host}:{seed_port}",
                          "--upload-limit", str(1 << 20)], name="libtorrent")
    wait_for_line(procs, seeder, r'"state": "seeding"')
    http_port = free_port("127.0.0.1")
    mnt = tmp_path / "mnt"
    token = "page-T0ken"
    mount_swarm(mounts, torrent, mnt, "--peer", f"{host}:{seed_port}", "--lazy",
                "--http", f"127.0.0.1:{http_port}", "--http-token", token)
    info_hash = load_torrent(torrent).info_hash_hex
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"http://127.0.0.1:{http_port}/?token={token}")
        wait(driver, lambda d: by_css(d, f"section.torrent[data-hash='{info_hash}']"),
             "the mount's torrent")
        assert "extras/notes.txt" in by_css(driver, "section.torrent")[0].text
        assert play_and_watch_time_advance(driver, "clip.webm") > 1.5
        add_magnet(driver, f"magnet:?xt=urn:btih:{'c' * 40}")
        wait(driver, lambda d: "holds one torrent" in by_css(d, "#message")[0].text,
             "the single-torrent mount's refusal")
        assert "error" in by_css(driver, "#message")[0].get_attribute("class")
        time.sleep(2.5)  # a refresh of the bars after the playback's first fetches
        driver.save_screenshot(str(tmp_path / SCREENSHOT))
        # the page's API without the token is refused, and says why
        driver.get(f"http://127.0.0.1:{http_port}/api/torrents")
        assert "token" in driver.page_source
    assert clip.stat().st_size > 1_000_000
    assert (tmp_path / SCREENSHOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

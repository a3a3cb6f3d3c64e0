"""The data layer's online path, against a local HTTP server (127.0.0.1 only), and content checks.

Rate limits (with and without Retry-After), a moved file (404), a body cut short, a wrong hash,
proxy/SSL/DNS failures: each is one line naming the file, the cause and the fix; retries happen
where they should (bounded; time.sleep is recorded, not slept); nothing half-written is left.
Also: the raccoon verified by its pixels (any PNG compressor), weights verified by sha256 on
check and fetch, `hash-weights`, archives, optional online-only files, and the real registry.
"""

import bz2
import hashlib
import http.server
import io
import json
import os
import re
import socket
import struct
import tarfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
import test_data_layer
from PIL import Image
from test_data_layer import MESSAGES, OFFLINE, WEIGHTS, all_ok, error_of, leftovers, sha, states, target, write_registry

from lesson_helpers import data
from lesson_helpers.__main__ import main

COMMIT = "4a2ba791f00a527cd1df022fe9b880c4d7d4c340"
lesson = test_data_layer.lesson   # the fixture: a fake lesson in tmp dirs


# ------------------------------------------------------------------ a local server


class Server:
    """Serves registered bodies; each path may answer a scripted sequence first (the last one repeats)."""

    def __init__(self):
        self.bodies, self.scripts, self.requests = {}, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                script = server.scripts.get(self.path, [])
                answer = script.pop(0) if len(script) > 1 else (script[0] if script else "ok")
                body = server.bodies.get(self.path, b"")
                if answer == "ok":
                    self.send(200, body)
                elif answer == "cut":        # announces the whole body, sends half, hangs up
                    self.send(200, body, cut=True)
                elif answer == "wrong":
                    self.send(200, b"X" + body[1:])
                else:                        # e.g. (429, {"Retry-After": "1"})
                    status, headers = answer
                    self.send(status, b"no", headers)

            def send(self, status, body, headers=None, cut=False):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def add(self, path, body, *script):
        self.bodies[path] = body
        if script:
            self.scripts[path] = list(script)
        return self.base + path


@pytest.fixture
def online(lesson, monkeypatch):
    """The lesson fixture, with downloads allowed to the local server only, and sleeps recorded."""
    server = Server()
    monkeypatch.setattr(data, "_session", ONLINE_SESSION)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    sleeps = []
    monkeypatch.setattr(time, "sleep", lambda seconds: sleeps.append(seconds))
    lesson.server, lesson.sleeps = server, sleeps
    yield lesson
    server.httpd.shutdown()


ONLINE_SESSION = data._session


def downloads_left(lesson):
    folder = lesson.tmp / "downloads"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def nothing_written(lesson):
    written = [p for p in lesson.data.rglob("*") if p.is_file() and p.name != ".fetch.lock"] \
        if lesson.data.exists() else []
    return written == [] and leftovers(lesson.tmp) == [] and downloads_left(lesson) == []


def one_file(lesson, rel="data/doggy_door_images/happy_dog.jpg", *script, digest=None):
    body = lesson.files[rel]
    url = lesson.server.add("/" + Path(rel).name, body, *script)
    write_registry(lesson.registry, [(rel, digest or sha(body), "download", url)])
    return url


# ------------------------------------------------------------------ HTTP answers


def test_good_download_then_nothing_is_kept_in_the_download_cache(online):
    one_file(online)
    data.fetch()
    assert all_ok(online) and online.server.requests == ["/happy_dog.jpg"] and downloads_left(online) == []
    assert target(online, "data/doggy_door_images/happy_dog.jpg").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rate_limit_without_retry_after_is_retried_with_back_off(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (429, {}), (429, {}), (429, {}), "ok")
    data.fetch()
    assert all_ok(online) and len(online.server.requests) == 4
    waits = [s for s in online.sleeps if s > 0]
    assert waits == sorted(waits) and waits[-1] >= 2 * waits[0]   # exponential back-off


def test_rate_limit_with_retry_after_waits_as_asked(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (429, {"Retry-After": "7"}), "ok")
    data.fetch()
    assert all_ok(online) and len(online.server.requests) == 2 and 7 in online.sleeps


def test_rate_limit_that_persists_gives_one_line_after_a_bounded_number_of_tries(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (429, {"Retry-After": "3"}))
    message = error_of(data.fetch)
    assert message == (f"data/doggy_door_images/happy_dog.jpg: 127.0.0.1:{online.server.httpd.server_port} refused "
                       "more downloads from your network (HTTP 429, rate limit, it asks to wait 3 s): wait a few "
                       "minutes and fetch again, or use a mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    assert len(online.server.requests) == 1 + data.HTTP_RETRIES and nothing_written(online)


def test_a_long_retry_after_is_not_waited_for_here(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (429, {"Retry-After": "3600"}))
    assert "it asks to wait 3600 s" in error_of(data.fetch)
    assert len(online.server.requests) == 1 and max(online.sleeps, default=0) < 3600


def test_github_rate_limit_as_403(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (403, {"X-RateLimit-Remaining": "0"}))
    assert "(HTTP 403, rate limit)" in error_of(data.fetch)


def test_moved_file_404_is_not_retried_and_names_the_mirror(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (404, {}))
    message = error_of(data.fetch)
    assert message == (f"data/doggy_door_images/happy_dog.jpg: 127.0.0.1:{online.server.httpd.server_port} no "
                       "longer has it (HTTP 404: the source moved): use a mirror (--mirror DIR or LESSON_MIRROR=DIR), "
                       "and tell the lesson's maintainers")
    assert len(online.server.requests) == 1 and nothing_written(online)


def test_server_errors_are_retried_then_reported(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", (503, {}))
    assert "failed (HTTP 503, after 4 retries): try again later" in error_of(data.fetch)
    assert len(online.server.requests) == 1 + data.HTTP_RETRIES and nothing_written(online)


def test_truncated_body_is_retried_then_kept_nowhere(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", "cut")
    message = error_of(data.fetch)
    assert message == (f"data/doggy_door_images/happy_dog.jpg: the download from 127.0.0.1:"
                       f"{online.server.httpd.server_port} stopped before the end (3 tries; nothing was kept): fetch "
                       "again, or use a mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    assert len(online.server.requests) == 1 + data.DOWNLOAD_RETRIES and nothing_written(online)


def test_truncated_once_then_complete(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", "cut", "ok")
    data.fetch()
    assert all_ok(online) and len(online.server.requests) == 2 and downloads_left(online) == []


def test_wrong_hash_is_reported_in_one_line_and_nothing_is_written(online):
    one_file(online, "data/doggy_door_images/happy_dog.jpg", "wrong")
    message = error_of(data.fetch)
    assert message == (f"data/doggy_door_images/happy_dog.jpg from 127.0.0.1:{online.server.httpd.server_port} does "
                       "not match its sha256 (3 tries; changed upstream, or altered on the way): try later, or use a "
                       "mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    assert nothing_written(online)


def test_connection_refused(online):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    write_registry(online.registry, [("data/d/x.jpg", sha(b"x"), "download", f"http://127.0.0.1:{port}/x.jpg")])
    message = error_of(data.fetch)
    assert message.startswith(f"data/d/x.jpg: could not connect to 127.0.0.1:{port} (ConnectionError): check your "
                              "internet connection, or use a mirror")
    assert nothing_written(online)


def test_proxy_that_does_not_answer_names_https_proxy(online, monkeypatch):
    one_file(online)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    message = error_of(data.fetch)
    assert "through your proxy (ProxyError): check the HTTPS_PROXY setting (or unset it)" in message
    assert message.startswith("data/doggy_door_images/happy_dog.jpg: ") and online.server.requests == []


def test_tls_interception_names_the_certificate_settings(online):
    url = one_file(online)   # a plain-HTTP server asked for TLS fails the handshake, like a bad certificate
    write_registry(online.registry, [("data/doggy_door_images/happy_dog.jpg", sha(b"x"), "download",
                                      url.replace("http://", "https://"))])
    message = error_of(data.fetch)
    assert "was not trusted (SSL; networks that inspect traffic do this): set REQUESTS_CA_BUNDLE to your network" \
        in message


def test_dns_failure_says_no_network():
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    err = requests.exceptions.ConnectionError(MaxRetryError(None, "/x", NameResolutionError(
        "example.org", None, socket.gaierror(-2, "Name or service not known"))))
    message = data._network_problem("data/x.jpg", "https://example.org/x.jpg", err)
    assert message == ("data/x.jpg: cannot find example.org (no network, or DNS failed): check your internet "
                       "connection, or use a mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    MESSAGES.append(message)


# ------------------------------------------------------------------ archives: few requests


def tarball(members, top=f"repo-{COMMIT}"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            if content is None:   # a symlink member
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def zipped(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buffer.getvalue()


def big_group(online, n=120):
    """A group of n images in a tarball, 60 more in a zip, and a weights file: like episode 2."""
    tar_files = {f"data/dogs/train/{i}.jpg": f"dog {i}".encode() for i in range(n)}
    zip_files = {f"cats/{i}.jpg": f"cat {i}".encode() for i in range(60)}
    tar_url = online.server.add(f"/owner/repo/tar.gz/{COMMIT}", tarball({**tar_files, "README.md": b"x"}))
    zip_url = online.server.add("/cats.zip", zipped(zip_files))
    weights_url = online.server.add("/w.h5", online.files[WEIGHTS])
    rows = [(rel, sha(c), f"tar:{rel}", tar_url) for rel, c in tar_files.items()]
    rows += [(f"data/{m}", sha(c), f"zip:{m}", zip_url) for m, c in zip_files.items()]
    rows.append((WEIGHTS, sha(online.files[WEIGHTS]), "download", weights_url))
    write_registry(online.registry, rows)
    return tar_files, zip_files


def test_a_large_group_is_one_request_and_one_progress_bar(online, capsys):
    tar_files, zip_files = big_group(online)
    data.fetch()
    assert all_ok(online) and len(online.server.requests) == 3
    assert sorted(online.server.requests) == sorted(["/cats.zip", "/w.h5", f"/owner/repo/tar.gz/{COMMIT}"])
    bars = capsys.readouterr().err
    assert {"dogs", "cats", "mobilenet_v2_imagenet"} <= {line.split(":")[0].strip() for line in
                                                        bars.replace("\r", "\n").splitlines() if ":" in line}
    assert downloads_left(online) == [] and not (online.data / "README.md").exists()


def test_episode_2_of_the_real_registry_needs_a_handful_of_downloads():
    for episode, at_most in ((1, 12), (2, 3), (3, 2)):
        entries = data.entries_for([episode])
        urls = {e.url for e in entries}
        assert len(urls) <= at_most, (episode, len(urls))
    episode_2 = data.entries_for([2])
    assert len(episode_2) > 3000 and not any("_224" in e.path for e in episode_2)
    assert not any("_224" in e.path for e in data.entries_for([3]))
    assert {e.group for e in data.registry()} >= {"mobilenet_v2_no_top_160", "mobilenet_v2_no_top_224"}


def test_tar_members_outside_the_registry_or_unsafe_are_never_written(online):
    good = b"good dog"
    tar_url = online.server.add("/t.tar.gz", tarball({
        "data/dogs/ok.jpg": good, "../../escaped.txt": b"evil", "data/dogs/../../../escaped2.txt": b"evil",
        "data/dogs/link.jpg": None, "data/dogs/extra.jpg": b"not registered"}))
    write_registry(online.registry, [("data/dogs/ok.jpg", sha(good), "tar:data/dogs/ok.jpg", tar_url),
                                     ("data/dogs/link.jpg", sha(b"x"), "tar:data/dogs/link.jpg", tar_url)])
    message = error_of(data.fetch)
    assert message == (f"the dogs archive from 127.0.0.1:{online.server.httpd.server_port} has no data/dogs/link.jpg: "
                       "it changed upstream; use a mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    written = sorted(str(p.relative_to(online.tmp)) for p in online.tmp.rglob("*") if p.is_file()
                     and online.mirror not in p.parents and p.name not in ("registry.csv", ".fetch.lock"))
    assert written == ["data/dogs/ok.jpg"] and not list(online.tmp.parent.glob("escaped*"))


def test_a_damaged_member_is_reported_and_the_archive_not_kept(online):
    tar_url = online.server.add("/t.tar.gz", tarball({"data/dogs/a.jpg": b"changed"}))
    write_registry(online.registry, [("data/dogs/a.jpg", sha(b"original"), "tar:data/dogs/a.jpg", tar_url)])
    assert error_of(data.fetch) == (
        f"data/dogs/a.jpg from 127.0.0.1:{online.server.httpd.server_port} does not match its sha256 (a damaged or "
        "changed copy): fetch again later, or use a mirror (--mirror DIR or LESSON_MIRROR=DIR)")
    assert nothing_written(online)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_that_is_not_one(online, kind):
    url = online.server.add(f"/a.{kind}", b"PK\x03\x04 cut short" if kind == "zip" else b"\x1f\x8b\x08 cut")
    write_registry(online.registry, [("data/c/x.jpg", sha(b"x"), f"{kind}:c/x.jpg", url)])
    message = error_of(data.fetch)
    assert message.startswith(f"the c archive from 127.0.0.1:{online.server.httpd.server_port} is damaged (")
    assert nothing_written(online)


# ------------------------------------------------------------------ optional, online-only files (git blob id)


def test_optional_file_verified_by_its_git_blob_id(online):
    bear = b"a brown bear"
    url = online.server.add("/brown_bear.jpg", bear)
    blob = hashlib.sha1(b"blob %d\0" % len(bear) + bear).hexdigest()
    write_registry(online.registry, [("data/doggy_door_images/brown_bear.jpg", f"git-blob-sha1:{blob}", "download",
                                      url, "", "", "yes")])
    data.fetch()
    assert all_ok(online)
    online.server.bodies["/brown_bear.jpg"] = b"a black bear"
    target(online, "data/doggy_door_images/brown_bear.jpg").unlink()
    assert "does not match its git-blob-sha1" in error_of(data.fetch)


def test_optional_file_absent_from_the_mirror_fails_nothing(lesson, capsys):
    rows = [(rel, sha(c), "download", "https://example.invalid/x") for rel, c in lesson.files.items()]
    rows.append(("data/doggy_door_images/brown_bear.jpg", "git-blob-sha1:" + "0" * 40, "download",
                 "https://example.invalid/bear", "", "", "yes"))
    for rel in lesson.files:
        if rel == WEIGHTS:
            rows[list(lesson.files).index(rel)] = (rel, "", "download", "https://example.invalid/w")
    write_registry(lesson.registry, rows)
    data.fetch(mirror=lesson.mirror)
    assert capsys.readouterr().out == ("Note: the mirror has no brown_bear.jpg (optional: fetched online only); "
                                       "going on without.\n")
    assert states(lesson)["data/doggy_door_images/brown_bear.jpg"] == "absent"
    assert main(["check"]) == 0
    assert "episode 1: ready (5 files; 1 optional file(s) absent)" in capsys.readouterr().out


# ------------------------------------------------------------------ the raccoon: checked by its pixels


def face_source(shape=(48, 64)):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    return pixels, bz2.compress(pixels.tobytes())


def zlib_ng_png(pixels):
    """A PNG written with zlib-ng's compressor (as Pillow's macOS and Windows wheels do)."""
    from zlib_ng import zlib_ng

    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[row].tobytes() for row in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib_ng.compress(raw, 9)) + chunk(b"IEND", b""))


def pillow_png(level):
    def write(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()
    return write


@pytest.mark.parametrize("writer", ["default", "compress_level=1", "zlib-ng"])
def test_raccoon_is_checked_by_its_pixels_whatever_the_png_compressor(online, monkeypatch, writer):
    pixels, source = face_source()
    url = online.server.add("/face.dat", source)
    rel = "data/extra_animals/raccoon.png"
    write_registry(online.registry, [(rel, f"pixels-sha256:{data.pixel_digest(pixels)}", "download", url,
                                      "png-from-bz2-rgb:48x64", f"sha256:{sha(source)}")])
    default = data.write_png(pixels)
    if writer != "default":
        monkeypatch.setattr(data, "write_png", zlib_ng_png if writer == "zlib-ng" else pillow_png(1))
    data.fetch()
    written = target(online, rel).read_bytes()
    assert (written == default) == (writer == "default")   # other bytes ...
    assert all_ok(online) and main(["check"]) == 0          # ... same pixels: accepted
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(written))), pixels)
    target(online, rel).write_bytes(pillow_png(9)(pixels[::-1].copy()))   # a PNG of other pixels
    assert states(online)[rel] == "corrupt"


def test_raccoon_source_with_the_wrong_hash_is_refused(online):
    pixels, source = face_source()
    url = online.server.add("/face.dat", source)
    write_registry(online.registry, [("data/extra_animals/raccoon.png", f"pixels-sha256:{data.pixel_digest(pixels)}",
                                      "download", url, "png-from-bz2-rgb:48x64", f"sha256:{'0' * 64}")])
    assert "the source of data/extra_animals/raccoon.png from 127.0.0.1" in error_of(data.fetch)
    assert nothing_written(online)


def test_no_registry_digest_depends_on_a_compressor():
    for entry in data.registry():
        if entry.convert or entry.path.endswith(".png") and entry.path.startswith("data/extra_animals/raccoon"):
            assert entry.digest.startswith("pixels-sha256:"), entry.path
            assert entry.source_digest.startswith("sha256:"), entry.path
    raccoon = next(e for e in data.registry() if e.path.endswith("raccoon.png"))
    assert raccoon.convert == "png-from-bz2-rgb:768x1024"


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_the_mirrors_raccoon_and_bo_13_are_accepted(tmp_path, monkeypatch):
    """The mirror's raccoon.png (as is) and bo_13.jpg (a WebP: stored as a lossless PNG)."""
    wanted = {"data/extra_animals/raccoon.png", "data/presidential_doggy_door/train/bo/bo_13.png"}
    rows = [e for e in data.registry() if e.path in wanted]
    registry = tmp_path / "registry.csv"
    write_registry(registry, [(e.path, e.digest, e.how, e.url, e.convert, e.source_digest, e.optional) for e in rows])
    monkeypatch.setattr(data, "registry_file", lambda: registry)
    monkeypatch.setenv("LESSON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    data.fetch(mirror=OFFLINE)
    assert [s for _, s in data.check()] == ["ok", "ok"]
    bo = Image.open(tmp_path / "data/presidential_doggy_door/train/bo/bo_13.png")
    assert bo.format == "PNG" and bo.size == (1500, 1998)
    webp = Image.open(OFFLINE / "data/presidential_doggy_door/train/bo/bo_13.jpg")
    assert np.array_equal(np.asarray(bo.convert("RGB")), np.asarray(webp.convert("RGB")))


def test_a_webp_fetched_by_an_older_version_is_replaced_by_its_png(online):
    """Older helpers stored bo_13.jpg (a WebP): after the PNG is in place, that exact file goes, nothing else."""
    pixels, _ = face_source()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", quality=80)
    webp = buffer.getvalue()
    member = "data/dogs/train/bo/bo_13.jpg"
    url = online.server.add("/t.tar.gz", tarball({member: webp}))
    png = "data/dogs/train/bo/bo_13.png"
    write_registry(online.registry, [(png, f"pixels-sha256:{data.pixel_digest(data._decoded_rgb(webp))}",
                                      f"tar:{member}", url, "png", f"sha256:{sha(webp)}")])
    old = online.data / "dogs/train/bo/bo_13.jpg"
    old.parent.mkdir(parents=True)
    old.write_bytes(webp)
    other = online.data / "dogs/train/bo/bo_14.jpg"
    other.write_bytes(webp + b"!")
    data.fetch()
    assert all_ok(online) and not old.exists() and other.exists()
    assert Image.open(target(online, png)).format == "PNG"


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_every_lesson_image_is_a_format_older_tensorflow_reads():
    """image_dataset_from_directory before TF 2.20 reads JPEG, PNG, GIF and BMP only (bo_13 was a WebP)."""
    magic = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
    for entry in data.registry():
        if entry.path.startswith(("data/presidential_doggy_door/", "data/cats_and_dogs_filtered/")) \
                and not entry.is_optional:
            source = OFFLINE / entry.path
            content = source.read_bytes()[:4] if source.is_file() else data.write_png(np.zeros((2, 2, 3), np.uint8))
            assert content.startswith(magic), entry.path


# ------------------------------------------------------------------ weights: sha256 on check and fetch


def layout_h5(name, fill="Conv_1"):
    """A small HDF5 file with the layer shapes Keras expects for ``name``; only ``fill``'s kernel holds data."""
    import h5py

    layout = json.loads((Path(data.__file__).with_name("mobilenet_v2_layout.json")).read_text())
    layers = layout["no_top"] + ([] if "no_top" in name else layout["top"])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["layer_names"] = [layer.encode() for layer, _ in layers]
        for layer, shapes in layers:
            group = f.create_group(layer)
            group.attrs["weight_names"] = [f"w{i}".encode() for i in range(len(shapes))]
            for i, shape in enumerate(shapes):
                dataset = group.create_dataset(f"w{i}", shape=shape, dtype="f4")
                if layer == fill and i == 0:
                    dataset[...] = np.linspace(-1, 1, dataset.size, dtype="f4").reshape(shape)
        offset = f[fill]["w0"].id.get_offset()
    return buffer.getvalue(), offset


def flip_middle(path, at):
    content = bytearray(path.read_bytes())
    for i in range(at, at + 16):
        content[i] ^= 0xFF
    path.write_bytes(bytes(content))


def test_weights_from_the_mirror_flipped_in_the_middle_are_detected_and_replaced(lesson, capsys):
    data.fetch(mirror=lesson.mirror)
    weights = target(lesson, WEIGHTS)
    size = weights.stat().st_size
    flip_middle(weights, size // 2)
    assert weights.stat().st_size == size and states(lesson)[WEIGHTS] == "corrupt"
    assert main(["check"]) == 1 and f"corrupt   {weights}" in capsys.readouterr().out
    data.fetch(mirror=lesson.mirror)
    assert weights.read_bytes() == lesson.files[WEIGHTS] and states(lesson)[WEIGHTS] == "ok"


def test_weights_downloaded_are_trusted_by_layout_once_then_by_sha256(online):
    name = Path(WEIGHTS).name
    content, offset = layout_h5(name)
    url = online.server.add("/" + name, content)
    write_registry(online.registry, [(WEIGHTS, "", "download", url)])
    data.fetch()
    weights = target(online, WEIGHTS)
    assert states(online)[WEIGHTS] == "ok"
    assert data.read_sha256sums(online.models / data.TRUST_FILE) == {name: sha(content)}
    flip_middle(weights, offset + 1000)   # inside a kernel: the layout is still right, the bytes are not
    assert data.weights_layout(weights.read_bytes()) == data.expected_layout(name)
    assert states(online)[WEIGHTS] == "corrupt"
    data.fetch()
    assert weights.read_bytes() == content and states(online)[WEIGHTS] == "ok" and len(online.server.requests) == 2


def test_weights_with_the_wrong_layout_are_refused(online):
    content, _ = layout_h5("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5")   # no top
    url = online.server.add("/w.h5", content)
    write_registry(online.registry, [(WEIGHTS, "", "download", url)])   # the file with the 1000-class top
    assert error_of(data.fetch) == (f"{WEIGHTS} from 127.0.0.1:{online.server.httpd.server_port} does not hold the "
                                    "layers Keras's MobileNetV2 expects: fetch again later")
    assert not target(online, WEIGHTS).exists()


def test_weights_put_there_by_keras_are_checked_then_recorded(lesson):
    name = Path(WEIGHTS).name
    content, _ = layout_h5(name)
    lesson.models.mkdir(parents=True)
    (lesson.models / name).write_bytes(content)
    assert states(lesson)[WEIGHTS] == "ok"
    assert data.read_sha256sums(lesson.models / data.TRUST_FILE) == {name: sha(content)}
    (lesson.models / data.TRUST_FILE).unlink()
    (lesson.models / name).write_bytes(content[:2000] + b"\0" * 64 + content[2064:])   # damaged metadata
    assert states(lesson)[WEIGHTS] == "corrupt"


def mirror_with_weights(lesson, content):
    """The fake mirror, its weights file replaced by ``content`` and SHA256SUMS updated."""
    (lesson.mirror / WEIGHTS).write_bytes(content)
    sums = [line for line in (lesson.mirror / "SHA256SUMS").read_text().splitlines() if not line.endswith(WEIGHTS)]
    (lesson.mirror / "SHA256SUMS").write_text("\n".join([*sums, f"{sha(content)}  {WEIGHTS}"]) + "\n")


def test_weights_damaged_before_the_helpers_saw_them_are_replaced_from_the_mirrors_sums(lesson):
    """Issue 13, case 2: weights put in the Keras cache without the helpers (by Keras, by hand), damaged inside a
    kernel (same size, right layout), pass the layout check; a fetch from a mirror whose SHA256SUMS holds the
    right hash must replace them, not keep them."""
    name = Path(WEIGHTS).name
    content, offset = layout_h5(name)
    mirror_with_weights(lesson, content)
    lesson.models.mkdir(parents=True)
    weights = lesson.models / name
    weights.write_bytes(content)
    flip_middle(weights, offset + 1000)
    assert states(lesson)[WEIGHTS] == "ok"   # only the layout can be checked without a known hash
    data.fetch(mirror=lesson.mirror)
    assert weights.read_bytes() == content and states(lesson)[WEIGHTS] == "ok"
    assert data.read_sha256sums(lesson.models / data.TRUST_FILE) == {name: sha(content)}


def test_real_weights_are_never_replaced_by_the_mirrors_stand_ins(lesson, monkeypatch):
    name = Path(WEIGHTS).name
    real, _ = layout_h5(name)
    stand_in, _ = layout_h5(name, fill="bn_Conv1")
    mirror_with_weights(lesson, stand_in)
    monkeypatch.setattr(data, "STAND_IN_WEIGHTS_SHA256", {sha(stand_in)})
    lesson.models.mkdir(parents=True)
    (lesson.models / name).write_bytes(real)
    data.fetch(mirror=lesson.mirror)
    assert (lesson.models / name).read_bytes() == real and states(lesson)[WEIGHTS] == "ok"


def test_registry_hash_of_the_real_weights_is_enforced(online):
    content, _ = layout_h5(Path(WEIGHTS).name)
    url = online.server.add("/w.h5", content)
    write_registry(online.registry, [(WEIGHTS, sha(content), "download", url)])
    data.fetch()
    assert states(online)[WEIGHTS] == "ok"
    online.server.bodies["/w.h5"] = layout_h5(Path(WEIGHTS).name, fill="bn_Conv1")[0]   # right layout, other bytes
    target(online, WEIGHTS).unlink()
    assert "does not match its sha256" in error_of(data.fetch)


def test_hash_weights_check_and_write(online, capsys):
    content, _ = layout_h5(Path(WEIGHTS).name)
    url = online.server.add("/w.h5", content)
    write_registry(online.registry, [(WEIGHTS, "", "download", url),
                                     ("data/d/x.jpg", sha(b"x"), "download", "https://example.invalid/x")])
    assert main(["hash-weights", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"differs  {WEIGHTS} sha256:{sha(content)} (registry: none)" in out
    assert "run `python -m lesson_helpers hash-weights --write`" in out
    assert main(["hash-weights", "--write"]) == 0
    assert next(e for e in data.registry() if e.path == WEIGHTS).digest == f"sha256:{sha(content)}"
    assert next(e for e in data.registry() if e.path == "data/d/x.jpg").digest == f"sha256:{sha(b'x')}"
    assert main(["hash-weights", "--check"]) == 0
    online.server.bodies["/w.h5"] = layout_h5(Path(WEIGHTS).name, fill="bn_Conv1")[0]   # upstream changed
    assert main(["hash-weights", "--check"]) == 1
    assert downloads_left(online) == []


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_the_layout_check_accepts_the_offline_weights():
    for path in (OFFLINE / "keras" / "models").glob("*.h5"):
        assert data.weights_layout(path.read_bytes()) == data.expected_layout(path.name), path


@pytest.mark.slow
def test_the_recorded_layout_is_what_keras_expects():
    import keras

    for include_top, name in ((False, "x_no_top.h5"), (True, "x_224.h5")):
        model = keras.applications.MobileNetV2(weights=None, include_top=include_top)
        shapes = [[list(w.shape) for w in layer.weights] for layer in model.layers if layer.weights]
        assert shapes == data.expected_layout(name)


def test_a_download_cache_that_cannot_be_written(online, monkeypatch):
    one_file(online)
    (online.tmp / "a_file").write_text("x")
    monkeypatch.setattr(data, "download_cache_dir", lambda: online.tmp / "a_file" / "cache")
    message = error_of(data.fetch)
    assert message.startswith(f"{online.tmp / 'a_file'} is a file, but a folder is needed there for "), message
    assert message.endswith(": move that file, or use a mirror instead of downloading (--mirror DIR or "
                            "LESSON_MIRROR=DIR)"), message


# ------------------------------------------------------------------ the real registry


def test_the_real_registry_is_pinned_and_checked_by_content():
    kinds = set()
    for entry in data.registry():
        kind = entry.digest.partition(":")[0]
        kinds.add(kind)
        assert entry.url.startswith("https://"), entry.path
        if entry.is_weights:
            assert kind in ("", "sha256"), entry.path          # filled in by `hash-weights --write`
        else:
            assert kind in ("sha256", "pixels-sha256", "git-blob-sha1"), entry.path
        if entry.is_optional:
            assert kind == "git-blob-sha1", entry.path
        if "github" in entry.url:
            assert re.search(r"/[0-9a-f]{40}(/|$)", entry.url), entry.url   # a commit, never a branch
    assert {e.path for e in data.registry() if e.is_optional} == {
        "data/doggy_door_images/brown_bear.jpg", "data/presidential_doggy_door/train/bo/bo_11.jpg"}
    blobs = {e.path: e.digest for e in data.registry() if e.is_optional}
    assert blobs["data/doggy_door_images/brown_bear.jpg"] == "git-blob-sha1:96ab90680be707e7010307f11c6be5b584c95cda"
    assert blobs["data/presidential_doggy_door/train/bo/bo_11.jpg"] == \
        "git-blob-sha1:e656bce713f8d4c89bc2990d78f6e2f73c369690"
    assert data.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"   # `git hash-object`


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_build_registry_reproduces_the_committed_registry(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_registry", test_data_layer.REPO / "tools/build_registry.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "registry.csv"
    out.write_bytes(data.registry_file().read_bytes())
    monkeypatch.setattr(tool, "registry_file", lambda: out)
    tool.main(OFFLINE / "SHA256SUMS")
    assert out.read_text() == data.registry_file().read_text()


def test_every_message_provoked_here_is_one_short_line():
    """Runs last (this file comes after test_data_layer.py): all messages both files provoked."""
    assert MESSAGES, "no test provoked an error"
    for message in MESSAGES:
        assert "\n" not in message and len(message) < 300, message
        assert re.search(r"(data|keras)/|archive|mirror|/|\\", message), message   # names the file or folder
        assert ": " in message, message                                          # ...: what to do

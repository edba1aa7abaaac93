"""Reading image files of every mode, refusing bad ones, and indexing class folders."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrx.data import ImageSet, load_image, load_image_folder, part_map_path, part_map_reader
from vrx.errors import ConfigError, EmptyFolderError, ImageTooLargeError, InvalidImageError


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def rgb_image(w: int = 12, h: int = 8, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def check(a: np.ndarray, h: int, w: int) -> None:
    assert a.shape == (h, w, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0


# ---- modes -----------------------------------------------------------------------------------


def test_rgb_png_and_jpeg(tmp_path):
    img = rgb_image()
    a = load_image(save(img, tmp_path / "x.png"))
    check(a, 8, 12)
    assert np.allclose(a, np.asarray(img) / 255.0, atol=1e-6)
    smooth = np.zeros((8, 12, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 12, dtype=np.uint8)
    smooth[..., 2] = 200
    j = load_image(save(Image.fromarray(smooth), tmp_path / "x.jpg", quality=95))
    check(j, 8, 12)
    assert np.abs(j - smooth / 255.0).mean() < 0.03  # lossy, but the same picture


def test_grey_and_one_bit(tmp_path):
    grey = Image.fromarray(np.array([[0, 128, 255]], np.uint8))
    a = load_image(save(grey, tmp_path / "l.png"))
    check(a, 1, 3)
    assert np.allclose(a[0, :, 0], [0, 128 / 255, 1]) and np.allclose(a[..., 0], a[..., 2])
    bits = Image.fromarray(np.array([[True, False]])).convert("1")
    b = load_image(save(bits, tmp_path / "b.png"))
    check(b, 1, 2)
    assert np.allclose(b[0, 0], 1.0) and np.allclose(b[0, 1], 0.0)


def test_alpha_composited_on_white_by_default(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, 0] = 255          # red
    rgba[0, :, 3] = [0, 255, 128]  # transparent, opaque, half
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    a = load_image(path)
    check(a, 1, 3)
    assert np.allclose(a[0, 0], [1, 1, 1])                       # white background
    assert np.allclose(a[0, 1], [1, 0, 0])                       # opaque red
    assert np.allclose(a[0, 2], [1, 127 / 255, 127 / 255], atol=1e-2)
    black = load_image(path, background=0.0)
    assert np.allclose(black[0, 0], 0) and np.allclose(black[0, 1], [1, 0, 0])
    la = Image.fromarray(np.array([[[200, 0], [200, 255]]], np.uint8), "LA")
    c = load_image(save(la, tmp_path / "la.png"))
    assert np.allclose(c[0, 0], 1.0) and np.allclose(c[0, 1], 200 / 255)


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    plain = load_image(save(p, tmp_path / "p.png"))
    check(plain, 1, 2)
    assert np.allclose(plain[0, 0], [0, 0, 1]) and np.allclose(plain[0, 1], [0, 1, 0])
    clear = load_image(save(p, tmp_path / "pt.png", transparency=0))
    assert np.allclose(clear[0, 0], [1, 1, 1]) and np.allclose(clear[0, 1], [0, 1, 0])


def test_sixteen_bit_and_32_bit_grey(tmp_path):
    values = np.array([[0, 32768, 65535]], np.uint16)
    a = load_image(save(Image.fromarray(values), tmp_path / "16.png"))
    check(a, 1, 3)
    assert np.allclose(a[0, :, 1], [0, 32768 / 65535, 1], atol=1e-6)
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert i32.mode == "I"
    b = load_image(save(i32, tmp_path / "i.tif"))
    assert np.allclose(b[0, :, 0], [0, 1])
    wild = Image.fromarray(np.array([[-5, 70000]], np.int32))
    with pytest.raises(InvalidImageError, match="i32.tif.*outside 0..65535"):
        load_image(save(wild, tmp_path / "i32.tif"))


def test_cmyk_and_exif_orientation(tmp_path):
    cmyk = Image.new("CMYK", (4, 2), (0, 255, 255, 0))  # no black, full magenta+yellow = red
    a = load_image(save(cmyk, tmp_path / "c.jpg", quality=100))
    check(a, 2, 4)
    assert a[..., 0].mean() > 0.9 and a[..., 1].mean() < 0.1
    img = rgb_image(w=10, h=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate by 90°
    rotated = load_image(save(img, tmp_path / "r.jpg", exif=exif))
    assert rotated.shape == (10, 4, 3)


# ---- bad files -------------------------------------------------------------------------------


def test_missing_corrupt_and_truncated(tmp_path):
    with pytest.raises(InvalidImageError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG but not really" * 10)
    with pytest.raises(InvalidImageError, match="junk.png: cannot read image"):
        load_image(tmp_path / "junk.png")
    good = save(rgb_image(64, 64), tmp_path / "full.png")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="cut.png: cannot read image"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(InvalidImageError, match="not a file"):
        load_image(tmp_path)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A few-byte PNG whose header claims width×height (its pixel data is missing)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


def test_enormous_images_refused_before_decoding(tmp_path):
    bomb = png_claiming_size(tmp_path / "bomb.png", 10000, 10000)  # 100 MP in ~60 bytes
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError, match="bomb.png: 10000×10000 = 100.0 megapixels"):
        load_image(bomb)
    # Beyond Pillow's own hard limit (~179 MP) its DecompressionBombError becomes ours too.
    huge = png_claiming_size(tmp_path / "huge.png", 20000, 20000)
    for limit in (None, 10**9):
        with pytest.raises(ImageTooLargeError, match="huge.png: image too large"):
            load_image(huge, max_pixels=limit)
    small = save(rgb_image(20, 20), tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        load_image(small, max_pixels=100)
    check(load_image(small, max_pixels=400), 20, 20)


# ---- folders ---------------------------------------------------------------------------------


def make_layout(root: Path) -> None:
    for cls, n in (("ambulance", 3), ("fire_engine", 4)):
        for i in range(n):
            save(rgb_image(seed=i), root / cls / f"{i:06d}.png")
            save(Image.fromarray(np.full((8, 12), i, np.uint8)), root / cls / f"{i:06d}.parts.png")
            (root / cls / f"{i:06d}.json").write_text("{}")
    for i in range(2):
        save(rgb_image(seed=10 + i), root / "random" / f"{i:06d}.jpg")
    (root / "ambulance" / ".DS_Store").write_bytes(b"\0")


def test_folder_layout_and_companions(tmp_path):
    make_layout(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # companions and hidden files pass without a warning
        s = load_image_folder(tmp_path)
    assert isinstance(s, ImageSet)
    assert s.classes == ("ambulance", "fire_engine")
    assert [p.name for p in s.paths["fire_engine"]] == [f"{i:06d}.png" for i in range(4)]
    assert len(s) == 7 and len(s.random_paths) == 2 and s.random_dir == tmp_path / "random"
    assert part_map_path(s.paths["ambulance"][1]) == tmp_path / "ambulance" / "000001.parts.png"
    assert part_map_path(s.random_paths[0]) is None
    images = [load_image(p) for p in s.paths["ambulance"]]
    assert len(images) == 3 and images[0].shape == (8, 12, 3)
    assert np.allclose(images[2], np.asarray(rgb_image(seed=2)) / 255.0)
    assert len([load_image(p) for p in s.random_paths]) == 2  # the random images
    parts = part_map_reader(s)
    assert parts is None  # no toyworld.json: not a toyworld folder
    only = load_image_folder(tmp_path, ["fire_engine"], random_dir=tmp_path / "random")
    assert only.classes == ("fire_engine",)


def test_subsets_are_deterministic(tmp_path):
    make_layout(tmp_path)
    first = load_image_folder(tmp_path, max_images_per_class=2)
    assert [p.name for p in first.paths["fire_engine"]] == ["000000.png", "000001.png"]
    a = load_image_folder(tmp_path, max_images_per_class=2, seed=5).paths["fire_engine"]
    b = load_image_folder(tmp_path, max_images_per_class=2, seed=5).paths["fire_engine"]
    assert a == b and len(a) == 2 and list(a) == sorted(a)
    seeds = {load_image_folder(tmp_path, max_images_per_class=2, seed=k).paths["fire_engine"] for k in range(8)}
    assert len(seeds) > 1  # the seed really picks
    with pytest.raises(ConfigError):
        load_image_folder(tmp_path, max_images_per_class=0)


def test_bad_files_in_folder_are_named(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "ambulance" / "notes.txt").write_text("hello")
    (tmp_path / "ambulance" / "broken.png").write_bytes(b"garbage")
    png_claiming_size(tmp_path / "ambulance" / "huge.png", 10000, 10000)
    with pytest.warns(UserWarning) as record:
        s = load_image_folder(tmp_path)
    text = "\n".join(str(w.message) for w in record)
    assert "notes.txt" in text and "not an image type" in text
    assert "broken.png" in text and "not a readable image" in text
    assert "huge.png" in text and "megapixels" in text
    assert len(s.paths["ambulance"]) == 3 and len(s.skipped) == 3
    with pytest.raises(InvalidImageError, match="broken.png"):
        load_image_folder(tmp_path, on_error="raise")


def test_decode_errors_found_when_loading(tmp_path):
    make_layout(tmp_path)
    data = (tmp_path / "ambulance" / "000001.png").read_bytes()
    (tmp_path / "ambulance" / "000001.png").write_bytes(data[:60])  # header intact, pixels cut
    s = load_image_folder(tmp_path)  # the header is fine, so the folder scan keeps the file
    assert len(s.paths["ambulance"]) == 3
    with pytest.raises(InvalidImageError, match="000001.png: cannot read image"):
        load_image(s.paths["ambulance"][1])
    assert [load_image(p).shape for p in s.paths["ambulance"][::2]] == [(8, 12, 3)] * 2


def test_folder_errors(tmp_path):
    with pytest.raises(EmptyFolderError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(EmptyFolderError, match="no class folders"):
        load_image_folder(tmp_path)
    make_layout(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(EmptyFolderError, match="empty_class: no readable images"):
        load_image_folder(tmp_path)
    with pytest.raises(EmptyFolderError, match=r"'school_bus'.*class folders here: \['ambulance'"):
        load_image_folder(tmp_path, ["school_bus"])
    with pytest.raises(EmptyFolderError, match="random-image folder does not exist"):
        load_image_folder(tmp_path, ["ambulance"], random_dir=tmp_path / "nowhere")
    s = load_image_folder(tmp_path, ["ambulance"])
    with pytest.raises(EmptyFolderError, match="no class 'fire_engine'"):
        s.class_index("fire_engine")

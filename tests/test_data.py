"""Data pipeline without the JPEG operator: sources, bad-file scan, crops, quality streams, datasets."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from jpegrestore.data import (
    CODiffQuality, ChoiceQuality, EpochSampler, EvalDataset, FolderSource, HFSource, MixtureQuality,
    RandomCropDataset, SampleSource, UniformQuality, collate, load_rgb, resolve_source, scan_source, stream_rng,
)
from jpegrestore.data.sources import SAMPLE_GRAYSCALE, SAMPLE_SPLITS
from jpegrestore.data.transforms import center_crop_offset, random_crop_offset, rgb_to_luma


# ------------------------------------------------------------------------------------------------ helpers
def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """R = row, G = column, B = 7: any crop reveals its own offset."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def _png_bytes(array: np.ndarray, bit_depth: int) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): colour type 2 (RGB) or 0 (gray)."""
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    sample = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[row].astype(sample).tobytes() for row in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture()
def bad_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two good images (PNG + JPEG, in a sub-folder too) and one file for each skip reason; crop 32."""
    good_png, good_jpg = _random_rgb(48, 40, 1), _random_rgb(40, 64, 2)
    jpeg = _encoded(good_jpg, "JPEG", quality=95)
    scan_start = jpeg.find(b"\xff\xda")
    corrupt = bytearray(jpeg)
    noise = np.random.default_rng(3).integers(0, 256, len(jpeg) - scan_start - 22).astype(np.uint8)
    corrupt[scan_start + 20 : -2] = noise.tobytes()  # random entropy-coded data: a decoder error
    cmyk = io.BytesIO()
    Image.fromarray(_random_rgb(48, 48, 4)).convert("CMYK").save(cmyk, "JPEG", quality=90)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a_good.png": _encoded(good_png, "PNG"),
        "sub/b_good.JPG": jpeg,
        "sub/corrupt.jpg": bytes(corrupt),
        "sub/deeper/truncated.jpeg": jpeg[: len(jpeg) // 2],
        "cmyk.jpg": cmyk.getvalue(),
        "sixteen.png": _png_bytes((_random_rgb(48, 48, 5).astype(np.uint16) * 257), 16),
        "tiny.png": _encoded(_random_rgb(16, 60, 6), "PNG"),
        "notes.png": b"these are my notes, not a picture\n" * 20,
        "README.txt": b"ignored: not an image extension",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    decoded_jpg = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    return tmp_path, {"a_good.png": good_png, "sub/b_good.JPG": decoded_jpg}


# ------------------------------------------------------------------------------------------------ sources
def test_sample_split_sizes_and_no_overlap_or_near_duplicates():
    splits = {s: SampleSource(s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [11, 2, 2]
    assert set(splits["val"].names) == {"chelsea", "coffee"}
    names = [n for s in splits.values() for n in s.names]
    assert len(names) == len(set(names))
    assert "motorcycle_right" not in names and "cat" not in names
    # no two images across splits are (near-)identical: compare every same-shaped cross-split pair
    arrays = {(s, i): load_rgb(src, i) for s, src in splits.items() for i in range(len(src))}
    for (split_a, i), a in arrays.items():
        for (split_b, j), b in arrays.items():
            if split_a < split_b and a.shape == b.shape:
                assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_sample_images_are_rgb_uint8_and_grayscale_can_be_dropped():
    source = SampleSource("train")
    first = load_rgb(source, 0)
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    colour_only = SampleSource("train", include_grayscale=False)
    assert len(colour_only) == len(SAMPLE_SPLITS["train"]) - len(SAMPLE_GRAYSCALE & set(SAMPLE_SPLITS["train"]))
    for index in range(len(colour_only)):
        image = load_rgb(colour_only, index).astype(int)
        assert np.abs(image[..., 0] - image[..., 1]).max() > 0
    gray = load_rgb(source, source.names.index("moon"))
    assert np.array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(ValueError, match="split"):
        SampleSource("training")


def test_folder_source_is_recursive_case_insensitive_and_sorted(tmp_path: Path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    for name in ("b.PNG", "x/a.Jpeg", "x/y/c.webp", "x/y/d.TIFF", "a.bmp", "notes.txt", "x/skip.gif"):
        (tmp_path / name).write_bytes(b"")
    source = FolderSource(tmp_path)
    assert [source.name(i) for i in range(len(source))] == ["a.bmp", "b.PNG", "x/a.Jpeg", "x/y/c.webp", "x/y/d.TIFF"]
    assert source.num_ignored == 2
    assert len(FolderSource(tmp_path, recursive=False)) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        FolderSource(tmp_path / "missing")


def test_hf_imagefolder_source_reads_the_written_pngs(tmp_path: Path):
    images = {f"img{i}.png": _random_rgb(20 + i, 24, i) for i in range(3)}
    (tmp_path / "data").mkdir()
    for name, array in images.items():
        Image.fromarray(array).save(tmp_path / "data" / name)
    source = HFSource("imagefolder", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert len(source) == 3
    loaded = sorted((load_rgb(source, i) for i in range(3)), key=lambda a: a.shape[0])
    for array, expected in zip(loaded, [images[f"img{i}.png"] for i in range(3)]):
        assert np.array_equal(array, expected)
    assert sorted(source.name(i).split("_", 1)[1] for i in range(3)) == sorted(images)
    with pytest.raises(ValueError, match="image_column 'picture'"):
        HFSource("imagefolder", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                 image_column="picture")


def test_hf_source_never_goes_online(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not available offline"):
        HFSource("no-such-user/no-such-dataset-jpegrestore", cache_dir=str(tmp_path))


def test_resolve_source_specs(tmp_path: Path):
    assert resolve_source("sample", "val").names == list(SAMPLE_SPLITS["val"])
    assert resolve_source("sample:test", "train").names == list(SAMPLE_SPLITS["test"])
    assert isinstance(resolve_source(str(tmp_path), "train"), FolderSource)
    built = resolve_source({"_target_": "jpegrestore.data.SampleSource", "split": "val"}, "train")
    assert built.names == list(SAMPLE_SPLITS["val"])
    assert resolve_source(None, "test") is None
    with pytest.raises(ValueError, match="_target_"):
        resolve_source({"split": "val"}, "train")


# ------------------------------------------------------------------------------------------------ scanning
EXPECTED_SKIPS = {"not an image": 1, "corrupt": 1, "truncated": 1, "cmyk": 1, "16-bit": 1, "smaller than crop": 1}


def test_scan_skips_and_counts_every_bad_file(bad_folder, caplog):
    root, good = bad_folder
    source = FolderSource(root)
    report = scan_source(source, min_size=32, workers=2)
    assert report.counts() == EXPECTED_SKIPS
    assert sorted(source.name(i) for i in report.usable) == sorted(good)
    assert report.summary() == (
        f"skipped 6 of 8 files in {root}: 1 not an image, 1 corrupt, 1 truncated, 1 cmyk, 1 16-bit, "
        "1 smaller than crop 32"
    )
    dataset = RandomCropDataset(source, report, 32, ChoiceQuality([50]), samples_per_epoch=20, flips=False,
                                rotations=False)
    goods = list(good.values())
    for index in range(len(dataset)):
        target = (dataset[index]["target"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert any(_contains(image, target) for image in goods)


def _contains(image: np.ndarray, patch: np.ndarray) -> bool:
    size = patch.shape[0]
    return any(
        np.array_equal(image[top : top + size, left : left + size], patch)
        for top in range(image.shape[0] - size + 1)
        for left in range(image.shape[1] - size + 1)
    )


def test_truncation_found_even_if_other_code_allows_truncated_images(bad_folder, monkeypatch):
    root, _ = bad_folder
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    report = scan_source(FolderSource(root), min_size=32, workers=1)
    assert report.counts()["truncated"] == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # not touched


def test_scan_leaves_the_pillow_global_alone(bad_folder):
    root, _ = bad_folder
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    scan_source(FolderSource(root), min_size=32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_header_scan_counts_load_time_failures_and_replaces_them_deterministically(bad_folder):
    root, _ = bad_folder
    source = FolderSource(root)
    report = scan_source(source, min_size=32, mode="header")
    assert report.counts() == {"not an image": 1, "cmyk": 1, "16-bit": 1, "smaller than crop": 1}
    assert len(report.usable) == 4  # the corrupt and truncated files pass a header scan
    dataset = RandomCropDataset(source, report, 32, UniformQuality(10, 90), samples_per_epoch=12)
    first = [dataset[(1, i)] for i in range(12)]
    assert report.counts() == EXPECTED_SKIPS
    fresh_report = scan_source(source, min_size=32, mode="header")
    fresh = RandomCropDataset(source, fresh_report, 32, UniformQuality(10, 90), samples_per_epoch=12)
    for index in reversed(range(12)):  # another order: failures are met at different times
        assert torch.equal(fresh[(1, index)]["target"], first[index]["target"])


def test_load_failures_in_loader_workers_reach_the_main_process(bad_folder):
    root, _ = bad_folder
    source = FolderSource(root)
    report = scan_source(source, min_size=32, mode="header")
    dataset = RandomCropDataset(source, report, 32, UniformQuality(), samples_per_epoch=16)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=EpochSampler(dataset), num_workers=2,
                                         collate_fn=collate)
    assert sum(len(batch["quality"]) for batch in loader) == 16
    assert report.counts() == EXPECTED_SKIPS


def test_folder_without_usable_images_raises_naming_folder_and_reasons(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        scan_source(FolderSource(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    (tmp_path / "bad" / "y.png").write_bytes(_encoded(_random_rgb(8, 8), "PNG"))
    with pytest.raises(ValueError, match=r"bad.*1 not an image, 1 smaller than crop 16"):
        scan_source(FolderSource(tmp_path / "bad"), min_size=16)


def test_palette_alpha_and_gray_files_convert_to_rgb(tmp_path: Path):
    rgb = _random_rgb(32, 32, 9)
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png", transparency=0)
    source = FolderSource(tmp_path)
    arrays = {source.name(i): load_rgb(source, i) for i in range(len(source))}
    assert np.array_equal(arrays["rgba.png"], rgb)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(arrays["gray.png"], np.stack([gray] * 3, -1))
    assert arrays["palette.png"].shape == (32, 32, 3)


# ------------------------------------------------------------------------------------------------ crops
@pytest.mark.parametrize("misalign", [False, True])
def test_crop_offsets_aligned_or_misaligned(misalign: bool):
    rng = np.random.default_rng(0)
    shifts = set()
    for _ in range(400):
        top, left = random_crop_offset(rng, 100, 131, 32, misalign)
        assert 0 <= top <= 68 and 0 <= left <= 99
        shifts.add((top % 8, left % 8))
    if misalign:
        assert (0, 0) not in shifts and len(shifts) > 40
    else:
        assert shifts == {(0, 0)}


def test_misalignment_falls_back_to_aligned_when_there_is_no_room():
    rng = np.random.default_rng(0)
    assert random_crop_offset(rng, 32, 32, 32, True) == (0, 0)
    assert {random_crop_offset(rng, 32, 34, 32, True)[1] for _ in range(50)} == {1, 2}


def test_center_crop_offset_is_block_aligned():
    assert center_crop_offset(300, 451, 256) == (16, 96)  # (22, 97) rounded down to multiples of 8
    with pytest.raises(ValueError):
        center_crop_offset(200, 451, 256)


def _single_image_dataset(image: np.ndarray, tmp_path: Path, **kwargs) -> RandomCropDataset:
    Image.fromarray(image).save(tmp_path / "coords.png")
    source = FolderSource(tmp_path)
    return RandomCropDataset(source, scan_source(source, 32), 32, ChoiceQuality([40]), **kwargs)


@pytest.mark.parametrize("misalign_prob", [0.0, 0.5, 1.0])
def test_dataset_crop_offsets_follow_misalign_prob(tmp_path: Path, misalign_prob: float):
    dataset = _single_image_dataset(_coordinate_image(120, 200), tmp_path, samples_per_epoch=300,
                                    misalign_prob=misalign_prob, flips=False, rotations=False)
    offsets = []
    for index in range(len(dataset)):
        target = (dataset[index]["target"] * 255).round().long()
        top, left = int(target[0, 0, 0]), int(target[1, 0, 0])
        assert torch.equal(target[0, :, 0], torch.arange(top, top + 32))  # an untransformed crop
        offsets.append((top, left))
    misaligned = np.mean([(t % 8, l % 8) != (0, 0) for t, l in offsets])
    assert abs(misaligned - misalign_prob) < 0.1


def test_flips_and_rotations_cover_the_eight_orientations(tmp_path: Path):
    dataset = _single_image_dataset(_coordinate_image(32, 32), tmp_path, samples_per_epoch=200)
    corners = Counter()
    for index in range(len(dataset)):
        target = (dataset[index]["target"] * 255).round().long()
        corners[(int(target[0, 0, 0]), int(target[1, 0, 0]), int(target[0, 0, 1]))] += 1
    assert len(corners) == 8 and min(corners.values()) > 10


def test_grayscale_target_is_jfif_luma(tmp_path: Path):
    rgb = _random_rgb(64, 64, 11)
    pillow_luma = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    ours = rgb_to_luma(rgb)[..., 0].astype(int)
    assert np.abs(ours - pillow_luma).max() <= 1 and np.mean(ours == pillow_luma) > 0.95
    dataset = _single_image_dataset(rgb, tmp_path, samples_per_epoch=2, grayscale=True)
    assert dataset[0]["target"].shape == (1, 32, 32)


# ------------------------------------------------------------------------------------------------ quality
def test_uniform_and_choice_quality_ranges():
    uniform = UniformQuality(10, 14)
    counts = Counter(uniform(0, 0, i) for i in range(5000))
    assert set(counts) == {10, 11, 12, 13, 14} and min(counts.values()) > 900
    choice = ChoiceQuality([5, 95])
    assert set(choice(0, 0, i) for i in range(200)) == {5, 95}
    for bad in (lambda: UniformQuality(0, 50), lambda: UniformQuality(60, 50), lambda: ChoiceQuality([101]),
                lambda: ChoiceQuality([]), lambda: MixtureQuality([uniform], [0.0])):
        with pytest.raises(ValueError):
            bad()


def test_codiff_mixture_distribution():
    sampler, rng = CODiffQuality(), np.random.default_rng(3)
    draws = np.array([sampler.sample(rng) for _ in range(40000)])
    assert draws.min() >= 8 and draws.max() <= 96
    listed = np.isin(draws, [10, 20, 30, 40, 50, 60])
    # P(listed) = 3/4 + 1/4 * 6/89; each listed value 1/8 + 1/356; each other value 1/356
    assert abs(listed.mean() - (0.75 + 0.25 * 6 / 89)) < 0.01
    for value in (10, 60):
        assert abs(np.mean(draws == value) - (1 / 8 + 1 / 356)) < 0.006
    others = draws[~listed]
    assert set(np.unique(others)) == set(range(8, 97)) - {10, 20, 30, 40, 50, 60}
    assert abs(len(others) / len(draws) - 83 / 356) < 0.01


def test_quality_is_a_pure_function_of_seed_epoch_index():
    sampler = CODiffQuality()
    stream = [sampler(7, 2, i) for i in range(50)]
    assert stream == [sampler(7, 2, i) for i in range(50)]
    assert stream != [sampler(7, 3, i) for i in range(50)]
    assert stream != [sampler(8, 2, i) for i in range(50)]
    rng_a, rng_b = stream_rng(1, 2, 3, "crop"), stream_rng(1, 2, 3, "flip")
    assert rng_a.integers(1 << 30) != rng_b.integers(1 << 30)
    with pytest.raises(ValueError, match="seed"):
        stream_rng(-1, 0, 0, "crop")


# ------------------------------------------------------------------------------------------------ streams
def _train_dataset(samples_per_epoch=24, seed=5) -> RandomCropDataset:
    source = SampleSource("val")
    return RandomCropDataset(source, scan_source(source, 64), 64, CODiffQuality(),
                             samples_per_epoch=samples_per_epoch, misalign_prob=0.5, seed=seed)


def test_samples_are_deterministic_and_resume_mid_stream():
    dataset, again = _train_dataset(), _train_dataset()
    epoch_two = [dataset[(2, i)] for i in range(24)]
    for index in (17, 3, 0):  # a resumed run asks for epoch 2 directly, in any order
        assert torch.equal(again[(2, index)]["target"], epoch_two[index]["target"])
        assert again[(2, index)]["quality"] == epoch_two[index]["quality"]
    epoch_three = [dataset[(3, i)]["quality"].item() for i in range(24)]
    assert epoch_three != [s["quality"].item() for s in epoch_two]
    other_seed = _train_dataset(seed=6)
    assert not torch.equal(other_seed[(2, 0)]["target"], epoch_two[0]["target"])


def test_epoch_sampler_ranks_partition_the_single_process_stream():
    dataset = _train_dataset(samples_per_epoch=10)
    single = EpochSampler(dataset, epoch=4)
    ranks = [EpochSampler(dataset, num_replicas=3, rank=r, epoch=4) for r in range(3)]
    assert list(single) == [(4, i) for i in range(10)]
    keys = [key for sampler in ranks for key in sampler]
    assert sorted(keys)[:10] == list(single) and len(keys) == 12 and len(set(keys)) == 12
    assert [len(s) for s in ranks] == [4, 4, 4]
    ranks[1].set_epoch(5)
    assert next(iter(ranks[1])) == (5, 1)


def test_loader_workers_give_the_same_batches_as_the_main_process():
    dataset = _train_dataset(samples_per_epoch=8)

    def batches(workers: int):
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=EpochSampler(dataset, epoch=1),
                                             num_workers=workers, collate_fn=collate)
        return [(b["target"], b["quality"]) for b in loader]

    for (t0, q0), (t2, q2) in zip(batches(0), batches(2)):
        assert torch.equal(t0, t2) and torch.equal(q0, q2)


def test_every_image_once_per_epoch_without_samples_per_epoch():
    source = SampleSource("train")
    dataset = RandomCropDataset(source, scan_source(source, 64), 64, UniformQuality(), samples_per_epoch=None)
    assert len(dataset) == 11
    orders = []
    for epoch in (0, 1):
        firsts = [dataset._first_choice(epoch, i) for i in range(11)]
        assert sorted(firsts) == list(range(11))
        orders.append(firsts)
    assert orders[0] != orders[1]


def test_eval_dataset_pairs_every_image_with_every_quality():
    source = SampleSource("val")
    dataset = EvalDataset(source, scan_source(source, 128), 128, [10, 20, 40])
    assert len(dataset) == 6
    items = [dataset[i] for i in range(6)]
    assert [(s["name"], int(s["quality"])) for s in items] == [
        ("chelsea", 10), ("chelsea", 20), ("chelsea", 40), ("coffee", 10), ("coffee", 20), ("coffee", 40)
    ]
    import skimage.data

    chelsea = skimage.data.chelsea()  # 300 x 451: centre offset (86, 161) -> (80, 160)
    expected = torch.from_numpy(chelsea[80:208, 160:288]).permute(2, 0, 1).float() / 255
    assert torch.equal(items[0]["target"], expected)
    batch = collate(items[:3])
    assert batch["name"] == ["chelsea"] * 3 and batch["quality"].tolist() == [10, 20, 40]
    full = EvalDataset(source, scan_source(source), None, [30])
    assert full[1]["target"].shape == (3, 400, 600)


def test_setup_logs_the_skip_summary_once(bad_folder, caplog):
    from jpegrestore.data import RestorationDataModule

    root, _ = bad_folder
    module = RestorationDataModule(train_source=str(root), val_source=None, test_source=None, crop_size=32,
                                   samples_per_epoch=4, batch_size=2)
    with caplog.at_level(logging.INFO, logger="jpegrestore.data"):
        module.setup("fit")
        module.setup("fit")
    messages = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(messages) == 1 and "skipped 6 of 8 files" in messages[0]
    assert module.skipped_files == {"train": EXPECTED_SKIPS}
    assert module.skip_summary().startswith(f"train: skipped 6 of 8 files in {root}: 1 not an image")
    assert module.val_dataloader() == []


def test_datamodule_is_hydra_instantiable(tmp_path: Path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    Image.fromarray(_random_rgb(40, 40)).save(tmp_path / "one.png")
    config = OmegaConf.create({
        "_target_": "jpegrestore.data.RestorationDataModule",
        "train_source": {"_target_": "jpegrestore.data.FolderSource", "root": str(tmp_path)},
        "val_source": {"_target_": "jpegrestore.data.SampleSource", "split": "val"},
        "test_source": None,
        "crop_size": 32,
        "val_crop_size": None,
        "quality": {"_target_": "jpegrestore.data.CODiffQuality"},
        "val_qualities": [5, 10],
        "misalign_prob": 0.5,
        "samples_per_epoch": 4,
        "batch_size": 2,
    })
    module = instantiate(config)
    module.setup("fit")
    assert isinstance(module.quality, CODiffQuality) and module.eval_qualities["val"] == [5, 10]
    assert next(iter(module.train_dataloader()))["target"].shape == (2, 3, 32, 32)
    loader = module.val_dataloader()
    assert loader.batch_size == 1 and len(loader) == 4  # full images: one per batch
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="val_qualities"):  # Hydra wraps our ValueError
        instantiate(config, val_qualities=[0])

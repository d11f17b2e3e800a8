"""JPEG degradation of batches (device and Pillow paths) and the datamodule inside a Lightning Trainer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from jpegrestore import jpeg
from jpegrestore.data import ChoiceQuality, CODiffQuality, RestorationDataModule, UniformQuality


def _pillow_round_trip(target: torch.Tensor, quality: int, subsampling: str) -> torch.Tensor:
    """Independent reference: Pillow's encode then Pillow's decode of a float [C, H, W] image."""
    pixels = (target * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    options = {} if picture.mode == "L" else {"subsampling": subsampling}
    picture.save(buffer, "JPEG", quality=quality, **options)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    decoded = decoded[:, :, None] if decoded.ndim == 2 else decoded
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255


def _module(**kwargs) -> RestorationDataModule:
    options = dict(train_source="sample:val", val_source="sample", test_source=None, crop_size=48,
                   val_crop_size=48, val_qualities=(10, 50, 90), batch_size=3, samples_per_epoch=6)
    options.update(kwargs)
    module = RestorationDataModule(**options)
    module.setup("fit")
    return module


def _first_val_batch(module: RestorationDataModule) -> dict:
    batch = next(iter(module.val_dataloader()))
    return module.on_after_batch_transfer(batch, 0)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_device_hook_gives_the_coefficients_of_each_image_at_its_quality(subsampling: str):
    batch = _first_val_batch(_module(subsampling=subsampling))
    assert set(batch) == {"target", "quality", "name", "coeffs", "input"}
    assert batch["quality"].tolist() == [10, 50, 90] and batch["target"].shape == (3, 3, 48, 48)
    for i, quality in enumerate(batch["quality"].tolist()):
        alone = jpeg.encode(batch["target"][i : i + 1], quality=quality, subsampling=subsampling, rounding="exact")
        for ours, reference in zip(batch["coeffs"][i].components(), alone.components()):
            assert torch.equal(ours, reference)
        # the decoded input is libjpeg's own result, to the last gray level
        reference = _pillow_round_trip(batch["target"][i], quality, subsampling)
        assert torch.equal((batch["input"][i] * 255).round(), (reference * 255).round())
    chroma_blocks = batch["coeffs"].cb.shape[1:3]
    assert chroma_blocks == ((6, 6) if subsampling == "4:4:4" else (3, 3))


def test_device_hook_grayscale_and_training_batches():
    module = _module(grayscale=True, quality=UniformQuality(20, 30))
    batch = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert batch["target"].shape == (3, 1, 48, 48) and batch["input"].shape == (3, 1, 48, 48)
    assert batch["coeffs"].cb is None and "name" not in batch
    assert all(20 <= q <= 30 for q in batch["quality"].tolist())
    for i, quality in enumerate(batch["quality"].tolist()):
        reference = _pillow_round_trip(batch["target"][i], quality, "4:2:0")
        assert torch.equal((batch["input"][i] * 255).round(), (reference * 255).round())


@pytest.mark.parametrize("grayscale", [False, True])
def test_pillow_option_gives_pillows_decode_and_the_same_layout(grayscale: bool):
    pillow = _first_val_batch(_module(compression="pillow", grayscale=grayscale))
    device = _first_val_batch(_module(compression="device", grayscale=grayscale))
    assert set(pillow) == set(device)
    assert torch.equal(pillow["target"], device["target"]) and pillow["name"] == device["name"]
    for i, quality in enumerate(pillow["quality"].tolist()):
        assert torch.equal(pillow["input"][i], _pillow_round_trip(pillow["target"][i], quality, "4:2:0"))
    for ours, theirs in zip(pillow["coeffs"].components() + [pillow["coeffs"].qt],
                            device["coeffs"].components() + [device["coeffs"].qt]):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert torch.equal(ours, theirs)  # libjpeg's own coefficients and tables = the exact re-encode
    assert torch.allclose(jpeg.decode(pillow["coeffs"], rounding="exact"), pillow["input"])


def test_pillow_option_in_loader_workers():
    module = _module(compression="pillow", num_workers=2, quality=ChoiceQuality([25]))
    batches = list(module.train_dataloader())
    assert len(batches) == 2 and all(b["coeffs"].y.shape == (3, 6, 6, 8, 8) for b in batches)
    assert torch.equal(batches[0]["input"][0], _pillow_round_trip(batches[0]["target"][0], 25, "4:2:0"))


# ------------------------------------------------------------------------------------------------ Lightning
class _Recorder:
    """Builds a LightningModule that records what each training step receives."""

    @staticmethod
    def make():
        import lightning.pytorch as pl

        class Recorder(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.weight = torch.nn.Parameter(torch.zeros(1))
                self.seen: list[tuple[int, list[int], float, bool]] = []
                self.val_names: list[str] = []

            def training_step(self, batch, batch_idx):
                self.seen.append((self.current_epoch, batch["quality"].tolist(),
                                  round(float(batch["target"].sum()), 3), "coeffs" in batch))
                return (self.weight * batch["input"].mean()).sum()

            def validation_step(self, batch, batch_idx):
                self.val_names.extend(batch["name"])

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Recorder()


def _fit(tmp_path, max_epochs: int, ckpt_path=None):
    import lightning.pytorch as pl

    module = _Recorder.make()
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, enable_checkpointing=False)
    data = _module(quality=CODiffQuality(), misalign_prob=0.5, samples_per_epoch=4, batch_size=2,
                   val_qualities=(10,), num_workers=1)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, module


def test_trainer_streams_differ_per_epoch_and_resume_continues_them(tmp_path):
    trainer, straight = _fit(tmp_path, max_epochs=3)
    assert [s[0] for s in straight.seen] == [0, 0, 1, 1, 2, 2] and all(s[3] for s in straight.seen)
    assert straight.seen[0][1:3] != straight.seen[2][1:3]
    assert straight.val_names == ["chelsea", "coffee"] * 3

    first, _ = _fit(tmp_path, max_epochs=1)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    _, resumed = _fit(tmp_path, max_epochs=3, ckpt_path=tmp_path / "epoch1.ckpt")
    assert resumed.seen == straight.seen[2:]


_DDP_SCRIPT = """
import json, sys, torch, lightning.pytorch as pl
from jpegrestore.data import RestorationDataModule, CODiffQuality

class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []
    def training_step(self, batch, batch_idx):
        self.seen.append([self.current_epoch, batch["quality"].tolist(), float(batch["target"].sum())])
        return (self.weight * batch["input"].mean()).sum()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

if __name__ == "__main__":
    devices = int(sys.argv[2])
    data = RestorationDataModule("sample:val", None, None, crop_size=32, quality=CODiffQuality(), batch_size=2,
                                 samples_per_epoch=8, seed=3)
    module = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=devices,
                         strategy="ddp" if devices > 1 else "auto", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=sys.argv[1])
    trainer.fit(module, datamodule=data)
    with open(f"{sys.argv[1]}/seen_{devices}_{trainer.global_rank}.json", "w") as f:
        json.dump(module.seen, f)
"""


@pytest.mark.slow
def test_ddp_ranks_split_the_single_process_stream(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for devices in (1, 2):
        subprocess.run([sys.executable, str(script), str(tmp_path), str(devices)], check=True, env=env,
                       timeout=600, cwd=tmp_path)
    single = json.loads((tmp_path / "seen_1_0.json").read_text())
    ranks = [json.loads((tmp_path / f"seen_2_{r}.json").read_text()) for r in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4]  # 2 epochs x 2 batches of 2 per rank
    assert ranks[0] != ranks[1]
    for epoch in (0, 1):
        def qualities(seen):
            return sorted(q for e, batch, _ in seen if e == epoch for q in batch)
        assert len(qualities(single)) == 8
        assert sorted(qualities(ranks[0]) + qualities(ranks[1])) == qualities(single)

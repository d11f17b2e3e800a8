"""Several methods and data sets in one evaluation: same numbers as single-method runs, failures per image, load
errors at start, data set preprocessing, the ranked summary, plots and panels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_helpers import write_tiny_checkpoint
from posterior_helpers import write_posterior_checkpoint
from spandrel_helpers import write_fbcnn

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["qf=[10,20]", "metrics=[psnr,consistency,bpp]", "device=cpu", "progress=false", "tile=0"]


def _compose(overrides, config="evaluate"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=config, overrides=overrides)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class FailsOnWidth:
    """Plain JPEG decoding that raises on images ``width`` pixels wide (a method failing on some images)."""

    def __init__(self, width: int, name: str = "flaky", **_: object) -> None:
        self.width, self.name = int(width), name

    def __call__(self, coeffs, jpeg_image):
        if jpeg_image.shape[-1] == self.width:
            raise RuntimeError(f"cannot restore width {self.width}")
        return jpeg_image


@pytest.fixture(scope="module")
def lineup(tmp_path_factory):
    """Two folders of photos, checkpoints of two recipes (QGAC, posterior GAN), a tiny diffusers prior and a
    random-weight FBCNN in its published layout."""
    import skimage.data

    from jpegrestore.nn.guided_diffusion import GuidedDiffusionUNet, save_guided_diffusion

    root = tmp_path_factory.mktemp("lineup")
    (root / "set1").mkdir()
    (root / "set2").mkdir()
    Image.fromarray(skimage.data.astronaut()[80:120, 200:248]).save(root / "set1" / "a.png")
    Image.fromarray(skimage.data.coffee()[100:133, 150:191]).save(root / "set1" / "b.png")  # odd size
    Image.fromarray(skimage.data.chelsea()[60:100, 100:156]).save(root / "set2" / "c.png")
    (root / "all").mkdir()  # the same three files in one folder, for the single-method runs
    for path in [*(root / "set1").iterdir(), *(root / "set2").iterdir()]:
        (root / "all" / path.name).write_bytes(path.read_bytes())
    torch.manual_seed(0)  # a tiny prior in the file format of the paper's guided-diffusion model
    prior = GuidedDiffusionUNet(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
                                attention_resolutions=(16,), channel_mult=(1, 2), num_head_channels=16,
                                use_scale_shift_norm=True, resblock_updown=True).eval()
    for param in prior.parameters():  # the zero-initialised output convs would make every forward trivial
        torch.nn.init.normal_(param, std=0.05)
    return {"root": root, "qgac": write_tiny_checkpoint(root / "qgac.ckpt")[0],
            "posterior": write_posterior_checkpoint(root / "posterior.ckpt"),
            "prior": save_guided_diffusion(prior, root / "tiny_256x256_diffusion_uncond.pt"),
            "fbcnn": write_fbcnn(root / "fbcnn_color.pth")[0]}


def _methods(lineup) -> list[str]:
    return [f"+methods.qgac.ckpt={lineup['qgac']}",
            f"+methods.posterior={{ckpt: {lineup['posterior']}, samples: 2, seed: 3}}",
            f"+methods.ddrm={{method: ddrm_jpeg, prior: {lineup['prior']}, samples: 2, steps: 2}}",
            f"+methods.fbcnn={{method: spandrel, weights: {lineup['fbcnn']}}}", "+methods.plain=jpeg"]


def _single_runs(lineup, tmp_path) -> dict[str, list[dict]]:
    """{method label: rows} of classic single-method runs on a folder holding the images of both data sets."""
    from jpegrestore.evaluation import evaluate_config

    singles = {"qgac": [f"ckpt={lineup['qgac']}"],
               "posterior": [f"ckpt={lineup['posterior']}", "method.samples=2", "method.seed=3"],
               "ddrm": ["method=ddrm_jpeg", f"method.prior={lineup['prior']}", "method.samples=2", "method.steps=2"],
               "fbcnn": ["method=spandrel", f"method.weights={lineup['fbcnn']}"]}
    out = {}
    for label, overrides in singles.items():
        cfg = _compose([*overrides, f"data.source={lineup['root'] / 'all'}", *COMMON, "comparisons=0"])
        result = evaluate_config(cfg, tmp_path / f"single_{label}")
        out["jpeg"] = [r for r in result.rows if r["method"] == "jpeg"]
        out[label] = [r for r in result.rows if r["method"] == result.method]
    return out


def test_one_run_equals_single_method_runs_and_writes_the_report(lineup, tmp_path):
    from jpegrestore.evaluation import evaluate_config

    root = lineup["root"]
    cfg = _compose([*_methods(lineup), f"+datasets.set1={root / 'set1'}", f"+datasets.set2={root / 'set2'}",
                    *COMMON, "comparisons=1"])
    result = evaluate_config(cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert result.methods == ["jpeg", "qgac", "posterior", "ddrm", "fbcnn"]  # "plain" is the JPEG baseline itself
    rows = _read_csv(out / "metrics.csv")
    # one row per data set x image x quality x method
    assert len(rows) == (2 + 1) * 2 * 5
    assert {(r["dataset"], r["image"]) for r in rows} == {("set1", "a.png"), ("set1", "b.png"), ("set2", "c.png")}
    assert not any(r["error"] for r in rows)
    singles = _single_runs(lineup, tmp_path)
    metrics = ("psnr", "consistency", "bpp", "seconds", "nfe", "sample_std")
    where = {"a.png": "set1", "b.png": "set1", "c.png": "set2"}
    for label, expected in singles.items():
        got = {(r["dataset"], r["image"], r["quality"]): r for r in result.rows if r["method"] == label}
        assert sorted(got) == sorted((where[r["image"]], r["image"], r["quality"]) for r in expected)
        for e in expected:
            g = got[(where[e["image"]], e["image"], e["quality"])]
            for name in metrics:
                if name == "seconds":
                    assert (g.get(name) is None) == (e.get(name) is None)
                else:
                    assert g.get(name) == e.get(name), (label, g["image"], g["quality"], name)
    assert {r["nfe"] for r in result.rows if r["method"] == "ddrm"} == {4.0}  # steps x samples
    assert {r["nfe"] for r in result.rows if r["method"] == "fbcnn"} == {1.0}
    assert all(r["seconds"] > 0 for r in result.rows if r["method"] != "jpeg")
    # summary: one table per metric, columns data set x QF, means equal to the single runs'
    summary = result.files["summary"].read_text()
    assert "| Method | set1 QF10 | set1 QF20 | set2 QF10 | set2 QF20 |" in summary
    assert "metrics on 8-bit rounded outputs" in summary  # the same protocol note as a single-method run
    assert "### PSNR [RGB] ↑" in summary and "### Consistency RMSE (gray levels) ↓" in summary
    assert "### Seconds per image ↓" in summary and "### Network evaluations per image ↓" in summary
    psnr = summary.split("### PSNR [RGB] ↑")[1].split("###")[0]
    for label, shown in (("jpeg", "JPEG"), ("qgac", "qgac"), ("posterior", "posterior"), ("ddrm", "ddrm"),
                         ("fbcnn", "fbcnn")):
        line = next(x for x in psnr.splitlines() if x.startswith(f"| {shown} |"))
        cells = [float(c.strip().strip("*").replace("<u>", "").replace("</u>", "")) for c in line.split("|")[2:-1]]
        expected = [np.mean([r["psnr"] for r in singles[label] if r["quality"] == q and where[r["image"]] == d])
                    for d in ("set1", "set2") for q in (10, 20)]
        assert cells == pytest.approx(expected, abs=0.006), label
    # plots: each metric against QF, one line per method; panels: one column per method
    for dataset in ("set1", "set2"):
        for name in ("psnr", "consistency", "sample_std"):
            with Image.open(out / "plots" / dataset / f"{name}_vs_qf.png") as plot:
                assert plot.width > 300 and plot.convert("L").getextrema()[0] < 255
    panels = sorted(p.relative_to(out / "comparisons").as_posix() for p in (out / "comparisons").rglob("*.png"))
    assert panels == ["set1/a_q10.png", "set1/a_q20.png", "set2/c_q10.png", "set2/c_q20.png"]
    with Image.open(out / "comparisons" / "set2" / "c_q10.png") as panel:
        assert panel.width == 6 * 56 + 5 * 4  # JPEG, qgac, posterior, ddrm, fbcnn, original, 4-px gaps
        assert panel.height > 40 + 40  # the image and its zoomed crop


def test_a_failing_method_is_reported_per_image_and_the_others_run(lineup, tmp_path, capsys):
    from jpegrestore.evaluation import evaluate_config

    root = lineup["root"]
    common = [o for o in COMMON if o != "progress=false"]
    cfg = _compose([f"+methods.flaky={{_target_: test_compare.FailsOnWidth, width: 41}}",
                    f"+methods.qgac.ckpt={lineup['qgac']}", f"data.source={root / 'set1'}", *common, "comparisons=2"])
    result = evaluate_config(cfg, tmp_path / "run")
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("3 methods x 2 images x 2 qualities") and "12/12" in line for line in bar)
    rows = {(r["image"], r["quality"], r["method"]): r for r in result.rows}
    for quality in (10, 20):
        assert rows[("b.png", quality, "flaky")]["error"] == "RuntimeError: cannot restore width 41"
        assert "psnr" not in rows[("b.png", quality, "flaky")]
        assert rows[("a.png", quality, "flaky")]["psnr"] == rows[("a.png", quality, "jpeg")]["psnr"]
        assert "psnr" in rows[("b.png", quality, "qgac")]  # the next method still ran on the failed image
        # the failed image is left out of the mean
        assert result.means["flaky"][quality]["psnr"] == rows[("a.png", quality, "jpeg")]["psnr"]
    summary = result.files["summary"].read_text()
    assert "flaky failed on 1 image(s) of set1 at QF 10" in summary and "cannot restore width 41" in summary
    csv_rows = _read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["error"] for r in csv_rows if r["method"] == "flaky" and r["image"] == "b.png"] == [
        "RuntimeError: cannot restore width 41"] * 2
    assert (tmp_path / "run" / "comparisons" / "set1" / "b_q10.png").is_file()  # a gray column for the failure
    # a method failing on every image of a column reads "failed" there, "n/a" where it had no value otherwise
    cfg = _compose([f"+methods.flaky={{_target_: test_compare.FailsOnWidth, width: 56}}",
                    f"+datasets.set1={root / 'set1'}", f"+datasets.set2={root / 'set2'}", *COMMON, "comparisons=0"])
    table = evaluate_config(cfg, tmp_path / "run2").files["summary"].read_text().split("### PSNR [RGB] ↑")[1]
    row = next(line for line in table.splitlines() if line.startswith("| flaky |"))
    assert [c.strip().strip("*").replace("<u>", "").replace("</u>", "") for c in row.split("|")[2:-1]][2:] == [
        "failed", "failed"]


@pytest.mark.parametrize("entry, names", [
    ("+methods.broken.ckpt={missing}", ["'broken'", "missing.ckpt"]),
    ("+methods.diffusion={{method: ddrm_jpeg, prior: {missing}}}", ["'diffusion'", "missing.ckpt"]),
])
def test_a_method_that_cannot_load_stops_the_run_at_start(lineup, tmp_path, entry, names):
    from jpegrestore.evaluation import evaluate_config
    from jpegrestore.evaluation.lineup import MethodLoadError

    entry = entry.format(missing=tmp_path / "missing.ckpt")
    cfg = _compose([f"+methods.qgac.ckpt={lineup['qgac']}", entry, f"data.source={lineup['root'] / 'set1'}",
                    *COMMON])
    with pytest.raises(MethodLoadError) as caught:
        evaluate_config(cfg, tmp_path / "run")
    for name in names:
        assert name in str(caught.value)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_unknown_method_and_dataset_keys_are_named(lineup, tmp_path):
    from jpegrestore.evaluation import evaluate_config

    with pytest.raises(ValueError, match="unknown method 'nosuch'"):
        evaluate_config(_compose(["+methods.x.method=nosuch", *COMMON]), tmp_path)
    with pytest.raises(ValueError, match=r"datasets.s: unknown key\(s\) \['grey'\]"):
        evaluate_config(_compose([f"+datasets.s={{source: {lineup['root'] / 'set1'}, grey: true}}", *COMMON]), tmp_path)
    with pytest.raises(ValueError, match="list it as an entry"):
        evaluate_config(_compose([f"ckpt={lineup['qgac']}", "+methods.plain=jpeg", *COMMON]), tmp_path)


def test_dataset_preprocessing_matches_pillow(tmp_path):
    """Border crop, shorter-side resize, centre crop and luma, against the same steps done with Pillow by hand;
    the JPEG row's PSNR equals that of Pillow's JPEG of the preprocessed image."""
    import io

    import skimage.data
    from skimage.metrics import peak_signal_noise_ratio

    from jpegrestore.evaluation import evaluate_config

    folder = tmp_path / "images"
    folder.mkdir()
    original = skimage.data.astronaut()[40:140, 100:230]  # 100 x 130
    Image.fromarray(original).save(folder / "x.png")
    picture = Image.fromarray(original).crop((5, 5, 125, 95))  # 90 x 120
    picture = picture.resize((64, 48), Image.BICUBIC)  # shorter side 90 -> 48
    picture = picture.crop((8, 0, 56, 48)).convert("L")  # centre 48 x 48, luma
    expected = np.asarray(picture)
    cfg = _compose([f"+datasets.gray={{source: {folder}, border_crop: 5, resize: 48, center_crop: 48, "
                    "grayscale: true}", "qf=[30]", "metrics=[psnr]", "device=cpu", "progress=false",
                    "comparisons=1"])
    result = evaluate_config(cfg, tmp_path / "run")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=30)
    decoded = np.asarray(Image.open(buffer))
    assert result.rows[0]["psnr"] == pytest.approx(peak_signal_noise_ratio(expected, decoded, data_range=255), abs=1e-3)
    from jpegrestore.evaluation.lineup import Preprocess

    image = torch.from_numpy(original.copy()).permute(2, 0, 1)[None].float() / 255
    out = Preprocess(border_crop=5, resize=48, center_crop=48, grayscale=True)(image)
    assert out.shape == (1, 1, 48, 48)
    assert np.array_equal((out[0, 0] * 255).round().byte().numpy(), expected)
    assert "border crop 5 px, shorter side resized to 48 (bicubic), centre crop 48x48, grayscale" in \
        result.files["summary"].read_text()


def test_ranked_cells_mark_best_bold_and_second_underlined():
    from jpegrestore.evaluation.report import ranked_cells

    assert ranked_cells([27.5, 28.25, None, 28.0], "psnr") == ["27.50", "**28.25**", "n/a", "<u>28.00</u>"]
    assert ranked_cells([0.3, 0.1, 0.2, 0.1], "lpips_alex") == ["0.3000", "**0.1000**", "<u>0.2000</u>", "**0.1000**"]
    assert ranked_cells([1.5, 1.5], "psnr") == ["1.50", "1.50"]  # nothing to rank
    assert ranked_cells([0.2, 0.3], "bpp") == ["0.2000", "0.3000"]  # the same files for every method
    assert ranked_cells([None, 2.0, 1.0], "psnr", ["failed", "n/a", "n/a"]) == ["failed", "**2.00**", "<u>1.00</u>"]


def test_methods_list_from_a_config_file_and_the_sweep(lineup, tmp_path):
    """conf/methods/<name>.yaml holds a long list; scripts/sweep_qf.py takes the same list."""
    from jpegrestore.evaluation.sweep import run_sweep

    conf = tmp_path / "conf"
    (conf / "methods").mkdir(parents=True)
    (conf / "methods" / "mine.yaml").write_text(f"qgac:\n  ckpt: {lineup['qgac']}\nflaky:\n"
                                                "  _target_: test_compare.FailsOnWidth\n  width: 41\n")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="sweep_qf", overrides=[
            f"hydra.searchpath=[file://{conf}]", "methods=mine", f"data.source={lineup['root'] / 'set1'}",
            "qf=[10,50]", "metrics=[psnr,ssim,bpp]", "device=cpu", "progress=false", "comparisons=0"])
    assert list(cfg.methods) == ["qgac", "flaky"]
    result = run_sweep(cfg, tmp_path / "sweep")
    rows = _read_csv(tmp_path / "sweep" / "sweep.csv")
    assert [(r["method"], r["quality"]) for r in rows] == [
        (m, q) for m in ("jpeg", "qgac", "flaky") for q in ("10", "50")]
    for name in ("psnr_vs_quality.png", "psnr_gain_vs_quality.png", "rate_distortion_psnr_bpp.png"):
        assert (tmp_path / "sweep" / name).is_file()
    assert result.methods == ["jpeg", "qgac", "flaky"]


def test_a_hugging_face_data_set_is_one_of_the_sets(lineup, tmp_path):
    """A data set given as an HFSource config (imagefolder over the same files) scores what its folder scores."""
    from jpegrestore.evaluation import evaluate_config

    folder = lineup["root"] / "set1"
    hf = (f"{{source: {{_target_: jpegrestore.data.HFSource, name: imagefolder, data_dir: {folder}, split: train, "
          f"cache_dir: {tmp_path / 'cache'}}}}}")
    cfg = _compose([f"+datasets.folder={folder}", f"+datasets.hf={hf}", "qf=[10]", "metrics=[psnr]", "device=cpu",
                    "progress=false", "comparisons=0"])
    result = evaluate_config(cfg, tmp_path / "run")
    by_set = {d: {r["image"].split("_", 1)[-1] if d == "hf" else r["image"]: r["psnr"]
                  for r in result.rows if r["dataset"] == d} for d in ("folder", "hf")}
    assert by_set["folder"] == by_set["hf"] and sorted(by_set["hf"]) == ["a.png", "b.png"]
    assert "data set hf: hf:imagefolder" in result.files["summary"].read_text()

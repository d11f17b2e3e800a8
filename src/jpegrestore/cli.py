"""The ``jpegrestore`` command.

    jpegrestore restore photo.jpg more/*.jpg -o restored/ --ckpt last.ckpt [--tile 512] [--project] [--device cuda]
    jpegrestore restore photo.jpg -o photo.png --ckpt last.ckpt
    jpegrestore restore photo.jpg -o out/ --ckpt <stochastic ckpt> --samples 4 --std-map --seed 0
    jpegrestore restore photo.jpg -o out/ --method ddrm_jpeg --prior <diffusion prior> [--samples 8 --std-map]
    jpegrestore demo --ckpt A.ckpt --ckpt B.ckpt [--prior <diffusion prior>] [--host 127.0.0.1 --port 7860]
    jpegrestore weights            # which pretrained weight files are found, and where they were looked for
    jpegrestore tiny-model ddpm OUT  # a tiny random DDPM prior (diffusers folder) for trying DDRM-JPEG offline
    jpegrestore tiny-model sd OUT  # a tiny random Stable Diffusion in the diffusers layout, for smoke tests
    jpegrestore convert codiff --codiff codiff.pkl --cave cave.pth -o codiff.ckpt   # the authors' CODiff weights

``restore`` reads each file's own quantization tables and coefficients (any quality or custom table;
grayscale, 4:4:4, 4:2:2, 4:2:0; baseline or progressive), restores it (tiled when larger than ``--tile``)
and writes an 8-bit PNG with the same stem. Networks that do not handle a file's chroma layout (QGAC
and 4:2:2) get the decoded image re-encoded exactly at 4:4:4 with the file's tables, with a warning.
``--project`` makes every output consistent with its input: re-encoding the PNG with the file's tables
and subsampling gives back the file's coefficients. Without ``--ckpt`` files are only decoded (libjpeg).
Unreadable files are reported on stderr by name; the others are still restored; exit status 1 if any failed.
With ``--samples N`` a stochastic method (one whose checkpoint names a sampling method) writes N draws per file,
``<stem>_s0.png`` ... , and ``--std-map`` adds ``<stem>_std.png``, the per-pixel standard deviation over the
draws (mean over colour channels, scaled so that white is the file's largest value, printed beside it).
CODiff checkpoints rebuild their Stable Diffusion base (``--pretrained`` to point elsewhere) and tile in
latent space; ``--latent``, ``--seed``, ``--no-color-fix`` and ``--quantization`` set their options.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

PROG = "jpegrestore"
#: Tiny random models ``jpegrestore tiny-model KIND OUT`` can write.
TINY_MODEL_KINDS = ("ddpm", "sd")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="JPEG restoration: restore files, inspect weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    restore = commands.add_parser("restore", help="restore JPEG files to PNG with a trained network")
    restore.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="JPEG files")
    restore.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                         help="output directory (created), or a .png file for a single input")
    restore.add_argument("--ckpt", type=Path, default=None,
                         help="checkpoint of any jpegrestore recipe; without it files are only decoded")
    restore.add_argument("--method", choices=["ddrm_jpeg"], default=None,
                         help="a training-free method instead of --ckpt: ddrm_jpeg (DDRM-JPEG, needs --prior)")
    restore.add_argument("--prior", default=None, metavar="PRIOR",
                         help="--method ddrm_jpeg: diffusion prior (diffusers folder, guided-diffusion .pt, "
                              "ddpm_prior checkpoint or cached Hugging Face id)")
    restore.add_argument("--tile", type=int, default=512,
                         help="restore images larger than this in tiles of this many pixels (multiple of 16; 0: never)")
    restore.add_argument("--tile-overlap", type=int, default=32, help="overlap of neighbouring tiles in pixels")
    restore.add_argument("--project", action="store_true",
                         help="make each output consistent with its input's coefficients (jpeg.project)")
    restore.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    restore.add_argument("--precision", choices=("32", "bf16", "16"), default=None,
                         help="the network in float32 (32, the default: exact), or under bf16 / fp16 autocast; the "
                              "JPEG decoding and projection stay in float32")
    restore.add_argument("--samples", type=int, default=1, metavar="N",
                         help="stochastic methods: write N draws per file (<stem>_s0.png, ...)")
    restore.add_argument("--std-map", action="store_true",
                         help="with --samples N >= 2: also write <stem>_std.png, the per-pixel std over the draws")
    restore.add_argument("--seed", type=int, default=None,
                         help="seed of the draws of stochastic methods and of CODiff's --latent sample (default 0)")
    restore.add_argument("--outside-range", choices=("warn", "skip", "run"), default=None,
                         help="files whose estimated quality or chroma layout lies outside what the checkpoint was "
                              "trained on: restore and warn, pass through as plain JPEG, or restore silently "
                              "(default: what the checkpoint records, e.g. skip for the quickstart; else warn)")
    codiff = restore.add_argument_group("CODiff checkpoints")
    codiff.add_argument("--pretrained", default=None,
                        help="Stable Diffusion base folder or cached repo id (default: the one the checkpoint records)")
    codiff.add_argument("--latent", choices=["mode", "sample"], default=None,
                        help="VAE latent of the JPEG: mode (default, repeatable) or a seeded sample (as the authors)")
    codiff.add_argument("--no-color-fix", dest="color_fix", action="store_const", const=False, default=None,
                        help="skip the AdaIN colour fix against the JPEG (on by default, as the authors)")
    codiff.add_argument("--quantization", choices=["float", "authors"], default=None,
                        help="float: colour fix on the float output, rounded once; authors: truncated to 8 bits, "
                             "colour fix, truncated again (their test script). Default: the checkpoint's "
                             "(authors for `convert codiff`, float otherwise)")
    restore.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_demo_parser(commands)
    commands.add_parser("weights", help="list pretrained weight files and whether they are found")
    tiny = commands.add_parser("tiny-model", help="write a tiny random model through the real saving code")
    tiny.add_argument("kind", choices=TINY_MODEL_KINDS,
                      help="ddpm: an unconditional DDPM prior (diffusers pipeline folder) for --method ddrm_jpeg; "
                           "sd: Stable Diffusion (vae/unet/scheduler, diffusers layout)")
    tiny.add_argument("output", type=Path, metavar="OUT", help="folder to write (created)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    convert = commands.add_parser("convert", help="turn published weights into a jpegrestore checkpoint")
    convert.add_argument("kind", choices=["codiff"], help="codiff: the authors' CODiff + CaVE files")
    convert.add_argument("--codiff", type=Path, required=True, help="the authors' CODiff file (codiff.pkl)")
    convert.add_argument("--cave", type=Path, required=True, help="the authors' CaVE state dict (cave.pth)")
    convert.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.ckpt", help="checkpoint to write")
    convert.add_argument("--pretrained", default=None,
                         help="Stable Diffusion 2.1 base recorded in the checkpoint (folder or cached repo id; "
                              "default stabilityai/stable-diffusion-2-1-base)")
    return parser


def _add_demo_parser(commands) -> None:
    demo = commands.add_parser("demo", help="a local web page comparing methods on your own images (gradio)")
    demo.add_argument("--ckpt", type=Path, action="append", default=[],
                      help="checkpoint of any jpegrestore recipe (repeatable: one column per checkpoint)")
    demo.add_argument("--prior", action="append", default=[], metavar="PRIOR",
                      help="DDRM-JPEG with this diffusion prior (as restore --method ddrm_jpeg --prior; repeatable)")
    demo.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    demo.add_argument("--tile", type=int, default=512, help="as restore --tile")
    demo.add_argument("--tile-overlap", type=int, default=32, help="as restore --tile-overlap")
    demo.add_argument("--outside-range", choices=("warn", "skip", "run"), default=None,
                      help="as restore --outside-range")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    demo.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")


def demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: build the methods, then serve the page until interrupted."""
    from jpegrestore.demo import require_gradio

    try:
        require_gradio()
        from jpegrestore.demo.compare import BuildOptions, MethodBank, MethodSpec

        specs = ([MethodSpec("checkpoint", str(path)) for path in args.ckpt]
                 + [MethodSpec("ddrm_jpeg", prior) for prior in args.prior])
        bank = MethodBank(specs, BuildOptions(args.device, args.tile, args.tile_overlap, args.outside_range))
    except (ImportError, OSError, ValueError) as error:
        _error(f"error: {error}")
        return 1
    from jpegrestore.demo.page import serve

    serve(bank, host=args.host, port=args.port)
    return 0


def tiny_model(args: argparse.Namespace) -> int:
    """``jpegrestore tiny-model KIND OUT``: write a tiny random model of the real classes to OUT."""
    if args.kind == "ddpm":
        from jpegrestore.sampling.priors import write_tiny_ddpm

        print(f"tiny random DDPM prior written to {write_tiny_ddpm(args.output, seed=args.seed)}")
        return 0
    from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion

    out = write_tiny_stable_diffusion(args.output, seed=args.seed)
    print(f"wrote a tiny random Stable Diffusion to {out}")
    print("CPU smoke test of CaVE + CODiff on it (tiny CaVE, DISTS off so that no weights are needed):")
    print("  python train.py experiment=codiff_stage1 model/network=cave_tiny trainer=cpu data.crop_size=72 "
          "model.train_crop=64 data.batch_size=4 data.samples_per_epoch=8 data.val_crop_size=64 trainer.max_steps=2 "
          "trainer.val_check_interval=2 hydra.run.dir=/tmp/tiny-cave")
    print(f"  python train.py experiment=codiff_stage2_tiny model.pretrained={out} "
          "model.cave_checkpoint=/tmp/tiny-cave/checkpoints/last.ckpt model.dists_weight=0 "
          "hydra.run.dir=/tmp/tiny-codiff")
    print("  python evaluate.py ckpt=/tmp/tiny-codiff/checkpoints/last.ckpt qf=[10] max_images=1 metrics=[psnr,ssim]")
    return 0


def convert(args: argparse.Namespace) -> int:
    """The ``convert`` command; returns the exit status."""
    from jpegrestore.nn.codiff.convert import DEFAULT_PRETRAINED, convert_authors_files

    try:
        out = convert_authors_files(args.codiff, args.cave, args.output, args.pretrained or DEFAULT_PRETRAINED)
    except (OSError, ValueError) as error:
        _error(f"error: {error}")
        return 1
    print(f"wrote {out}; evaluate it with: python evaluate.py ckpt={out}")
    return 0


def _error(message: str) -> None:
    from jpegrestore.evaluation.files import note

    note(message)


def _output_paths(inputs: Sequence[Path], output: Path) -> list[Path]:
    """One PNG per input: ``output`` itself for a single input ending in .png, else ``output/<stem>.png``.

    Inputs sharing a stem get ``_1``, ``_2``, ... appended so no output is overwritten.
    """
    if output.suffix.lower() == ".png":
        if len(inputs) != 1:
            raise ValueError(f"-o {output} names one PNG file but {len(inputs)} inputs were given; pass a directory")
        return [output]
    taken: set[str] = set()
    paths = []
    for path in inputs:
        stem, n = path.stem, 0
        while stem in taken:
            n += 1
            stem = f"{path.stem}_{n}"
        taken.add(stem)
        paths.append(output / f"{stem}.png")
    return paths


def _build_method(args: argparse.Namespace):
    from jpegrestore.evaluation.methods import JPEGDecode, checkpoint_method

    if args.tile:
        from jpegrestore.tiling import check_tiling

        check_tiling(args.tile, args.tile_overlap)
    if args.method == "ddrm_jpeg":
        from jpegrestore.evaluation.ddrm import DDRMJPEGMethod

        if args.ckpt is not None:
            raise ValueError("--method ddrm_jpeg restores with a diffusion prior: pass --prior PATH, not --ckpt")
        seed = {} if args.seed is None else {"seed": args.seed}
        method = DDRMJPEGMethod(prior=args.prior, device=args.device, tile=args.tile or None,
                                tile_overlap=args.tile_overlap, precision=args.precision or "32", **seed)
    elif args.prior is not None:
        raise ValueError("--prior is used by --method ddrm_jpeg; add --method ddrm_jpeg")
    elif args.ckpt is None:
        _error("warning: no --ckpt given; files are only decoded")
        return JPEGDecode()
    else:
        method = checkpoint_method(args.ckpt, device=args.device, tile=args.tile or None,
                                   tile_overlap=args.tile_overlap, outside_range=args.outside_range,
                                   precision=args.precision, pretrained=args.pretrained, latent=args.latent,
                                   seed=args.seed, color_fix=args.color_fix, quantization=args.quantization)
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.samples > 1 and not callable(getattr(method, "sample", None)):
        raise ValueError(f"--samples {args.samples}: {args.ckpt} holds a deterministic method ({method.name}); "
                         "it gives one restoration per file")
    if args.std_map and args.samples < 2:
        raise ValueError("--std-map needs --samples N with N >= 2")
    return method


def restore(args: argparse.Namespace) -> int:
    """The ``restore`` command; returns the exit status."""
    from tqdm.auto import tqdm

    from jpegrestore.evaluation.files import restore_file
    from jpegrestore.evaluation.methods import resolve_device

    try:
        targets = _output_paths(args.inputs, args.output)
        device = resolve_device(args.device)
        method = _build_method(args)
    except (OSError, ValueError) as error:
        _error(f"error: {error}")
        return 1
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = tqdm(list(zip(args.inputs, targets)), desc="restore", unit="file",
               disable=args.quiet or len(targets) == 1)
    for source, target in bar:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                restore_file(method, source, target, args.project, device, args.samples, args.std_map,
                             0 if args.seed is None else args.seed)
            except (OSError, ValueError, RuntimeError) as error:
                failed += 1
                text = str(error)
                _error(f"error: {text}" if str(source) in text else f"error: {source}: {text}")
        for warning in caught:
            _error(f"warning: {source}: {warning.message}")
    bar.close()
    if failed:
        _error(f"{failed} of {len(targets)} file(s) failed; the others were written to {targets[0].parent}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jpegrestore`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "weights":
        from jpegrestore.weights import format_status

        print(format_status())
        return 0
    if args.command == "tiny-model":
        return tiny_model(args)
    if args.command == "convert":
        return convert(args)
    if args.command == "demo":
        return demo(args)
    return restore(args)

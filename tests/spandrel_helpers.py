"""Random-weight published restoration networks, built by spandrel's own architecture classes and saved in the
authors' file layouts (FBCNN, DnCNN-3: a bare state dict; SwinIR: {"params": state dict})."""

from __future__ import annotations

from pathlib import Path

import torch


def write_fbcnn(path: Path, in_nc: int = 3, seed: int = 0):
    """A small FBCNN (its QF branch is fixed at 512 features) -> (path, network in eval mode)."""
    from spandrel.architectures.FBCNN import FBCNN

    torch.manual_seed(seed)
    net = FBCNN(in_nc=in_nc, out_nc=in_nc, nc=[4, 8, 16, 512], nb=2).eval()
    torch.save(net.state_dict(), path)
    return path, net


def write_dncnn3(path: Path, seed: int = 0):
    """A small grayscale DnCNN as KAIR publishes dncnn3.pth (act_mode "R", batch norm merged) -> (path, net)."""
    from spandrel.architectures.DnCNN import DnCNN

    torch.manual_seed(seed)
    net = DnCNN(in_nc=1, out_nc=1, nc=4, nb=8, act_mode="R").eval()
    torch.save(net.state_dict(), path)
    return path, net


def write_swinir_gray(path: Path, seed: int = 0):
    """A small grayscale SwinIR JPEG model (window 7, as the CAR models) saved as {"params": ...} -> (path, net)."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    net = SwinIR(upscale=1, in_chans=1, img_size=14, window_size=7, img_range=255.0, depths=[1], embed_dim=6,
                 num_heads=[1], mlp_ratio=1, upsampler="", resi_connection="1conv").eval()
    torch.save({"params": net.state_dict()}, path)
    return path, net


def write_drunet(path: Path, seed: int = 0):
    """A small colour DRUNet (noise-level map as a fourth input channel), KAIR's layout -> (path, net)."""
    from spandrel.architectures.DRUNet import DRUNet

    torch.manual_seed(seed)
    net = DRUNet(in_nc=4, out_nc=3, nc=[4, 8, 16, 32], nb=2).eval()
    torch.save(net.state_dict(), path)
    return path, net


def write_scunet(path: Path, seed: int = 0):
    """A small colour SCUNet, KAIR's layout -> (path, net)."""
    from spandrel.architectures.SCUNet import SCUNet

    torch.manual_seed(seed)
    net = SCUNet(in_nc=3, config=[1, 1, 1, 1, 1, 1, 1], dim=64).eval()  # 64: the 32-channel heads need it
    torch.save(net.state_dict(), path)
    return path, net

"""GMFlow (Xu et al. 2022) as GMFSS uses it: 2 scales, swin attention, 6 transformer blocks of 128 channels.

State-dict compatible with ``flownet.pkl``. Split in two so callers can cache per-image work:
``encode`` (normalisation + CNN backbone, depends on one image) and ``bidirectional_flow``
(cross-attention, matching, propagation and upsampling, depends on the pair), which returns
the flows in both directions from one transformer pass at the coarse scale.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.warp import BackWarp

FEATURE_CHANNELS = 128
UPSAMPLE_FACTOR = 4  # the finer matching scale is 1/4 of the input
ATTN_SPLITS = (2, 8)  # swin windows per side at the 1/8 and 1/4 scales
LOCAL_RADIUS = 4  # matching radius at the 1/4 scale (the 1/8 scale matches globally)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# The pieces of a transformer layer, and the parts of GMFlow, that can run as fp32 islands under autocast.
PIECES = ("projections", "attention", "mlp")
PARTS = ("backbone", *(f"{scale}_{piece}" for scale in ("coarse", "fine") for piece in PIECES), "matching")


def pieces_at(scale: str, parts: frozenset[str]) -> frozenset[str]:
    """The transformer pieces of ``parts`` at ``scale`` (coarse or fine)."""
    return frozenset(piece for piece in PIECES if f"{scale}_{piece}" in parts)


def _island(fp32: bool, like: torch.Tensor) -> AbstractContextManager:
    """Autocast off on ``like``'s device when ``fp32`` (the part computes in the dtype of its inputs: pass them
    ``.float()``), else nothing: the part runs in whatever autocast gives it."""
    return torch.autocast(like.device.type, enabled=False) if fp32 else nullcontext()


def _as(x: torch.Tensor, fp32: bool) -> torch.Tensor:
    return x.float() if fp32 else x


class FlowFeatures(NamedTuple):
    """Backbone output for a batch of images: 128 channels at 1/8 and at 1/4 of the input."""

    coarse: torch.Tensor
    fine: torch.Tensor


class _ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and a (projected when the shape changes) skip connection."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm1 = nn.InstanceNorm2d(cout)
        self.norm2 = nn.InstanceNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


class _TwoStrideConv(nn.Module):
    """One 3x3 kernel applied at stride 1 and stride 2 (a two-branch trident conv)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c, c, 3, 3))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.conv2d(x, self.weight, None, 1, 1), F.conv2d(x, self.weight, None, 2, 1)


class CNNEncoder(nn.Module):
    """Image -> features at 1/4 (fine) and 1/8 (coarse) resolution."""

    def __init__(self, out_dim: int = FEATURE_CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.norm1 = nn.InstanceNorm2d(64)
        self.layer1 = nn.Sequential(_ResidualBlock(64, 64, 1), _ResidualBlock(64, 64, 1))
        self.layer2 = nn.Sequential(_ResidualBlock(64, 96, 2), _ResidualBlock(96, 96, 1))
        self.layer3 = nn.Sequential(_ResidualBlock(96, 128, 1), _ResidualBlock(128, 128, 1))
        self.conv2 = nn.Conv2d(128, out_dim, 1, 1, 0)
        self.trident_conv = _TwoStrideConv(out_dim)

    def forward(self, x: torch.Tensor) -> FlowFeatures:
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.conv2(self.layer3(self.layer2(self.layer1(x))))
        fine, coarse = self.trident_conv(x)
        return FlowFeatures(coarse, fine)


def sine_position(h: int, w: int, channels: int, device: torch.device) -> torch.Tensor:
    """DETR-style normalised sine/cosine position code for an h x w window: (1, channels, h, w), fp32."""
    half = channels // 2
    eps, two_pi = 1e-6, 2 * math.pi
    ys = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * two_pi
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * two_pi
    i = torch.arange(half, dtype=torch.float32, device=device)
    freq = 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / half)
    even = (torch.arange(half, device=device) % 2 == 0)

    def code(v: torch.Tensor) -> torch.Tensor:  # (L,) -> (L, half): sin on even, cos on odd channels
        p = v[:, None] / freq
        return torch.where(even, p.sin(), p.cos())

    py = code(ys)[:, None, :].expand(h, w, half)
    px = code(xs)[None, :, :].expand(h, w, half)
    return torch.cat([py, px], 2).permute(2, 0, 1).unsqueeze(0)


def add_window_position(x: torch.Tensor, splits: int) -> torch.Tensor:
    """Add the same position code to each of the splits x splits windows of ``x``."""
    _, c, h, w = x.shape
    pos = sine_position(h // splits, w // splits, c, x.device).to(x.dtype)
    return x + pos.repeat(1, 1, splits, splits)


def _to_windows(x: torch.Tensor, splits: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*splits*splits, H/splits * W/splits, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, splits, h // splits, splits, w // splits, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * splits * splits, (h // splits) * (w // splits), c)


def _from_windows(x: torch.Tensor, splits: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``_to_windows``: back to (B, H, W, C)."""
    c = x.shape[-1]
    b = x.shape[0] // (splits * splits)
    x = x.view(b, splits, splits, h // splits, w // splits, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _window_order(h: int, w: int, splits: int, shifted: bool, device: torch.device) -> torch.Tensor:
    """The token (index into the H*W grid) at each position of the window order ``_AttentionLayer`` attends in:
    windows in row-major order after the cyclic shift of shifted windows, tokens row-major in each window."""
    grid = torch.arange(h * w, device=device).view(1, h, w, 1)
    if shifted:
        grid = torch.roll(grid, (-(h // splits // 2), -(w // splits // 2)), (1, 2))
    return _to_windows(grid, splits).reshape(-1)


def shifted_window_mask(h: int, w: int, splits: int, device: torch.device) -> torch.Tensor:
    """Additive mask (splits^2, L, L) that keeps attention inside the regions a cyclic shift brought together."""
    wh, ww = h // splits, w // splits
    sh, sw = wh // 2, ww // 2

    def bands(n: int, win: int, shift: int) -> torch.Tensor:  # 0 | 1 | 2 for the three bands along one axis
        band = torch.zeros(n, device=device)
        band[n - win:n - shift] = 1
        band[n - shift:] = 2
        return band

    region = bands(h, wh, sh)[:, None] * 3 + bands(w, ww, sw)[None, :]
    windows = _to_windows(region.view(1, h, w, 1), splits).squeeze(-1)  # (splits^2, L)
    differ = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, -100.0)


class _AttentionLayer(nn.Module):
    """Single-head (shifted-)window attention from source to target, with an optional feed-forward part."""

    def __init__(self, d: int, with_ffn: bool, ffn_expansion: int = 4) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.merge = nn.Linear(d, d, bias=False)
        self.norm1 = nn.LayerNorm(d)
        self.with_ffn = with_ffn
        if with_ffn:
            self.mlp = nn.Sequential(nn.Linear(2 * d, 2 * d * ffn_expansion, bias=False), nn.GELU(),
                                     nn.Linear(2 * d * ffn_expansion, d, bias=False))
            self.norm2 = nn.LayerNorm(d)

    def forward(self, source: torch.Tensor, target: torch.Tensor, h: int, w: int, splits: int,
                shift_mask: torch.Tensor | None, fp32_pieces: frozenset[str] = frozenset(PIECES)) -> torch.Tensor:
        """source, target: (B, H*W, C); ``shift_mask`` given means shifted windows. Under autocast the
        ``fp32_pieces`` (of ``PIECES``) run in fp32: the q/k/v/merge projections and the norm after them,
        the attention (scores, softmax, weighted sum), the feed-forward layers and their norm."""
        b, _, c = source.shape
        proj, attn, mlp = (piece in fp32_pieces for piece in PIECES)
        with _island(proj, source):
            q, k, v = (p(_as(x, proj)).view(b, h, w, c) for p, x in ((self.q_proj, source), (self.k_proj, target),
                                                                   (self.v_proj, target)))
        with _island(attn, source):
            q, k, v = (_as(x, attn) for x in (q, k, v))
            if shift_mask is not None:
                shift = (-(h // splits // 2), -(w // splits // 2))
                q, k, v = (torch.roll(x, shift, (1, 2)) for x in (q, k, v))
            q, k, v = (_to_windows(x, splits) for x in (q, k, v))
            scores = torch.matmul(q, k.transpose(1, 2)) / (c ** 0.5)
            if shift_mask is not None:
                scores = scores + shift_mask.repeat(b, 1, 1)
            out = _from_windows(torch.matmul(torch.softmax(scores, -1), v), splits, h, w)
            if shift_mask is not None:
                out = torch.roll(out, (h // splits // 2, w // splits // 2), (1, 2))
        with _island(proj, source):
            message = self.norm1(self.merge(_as(out, proj).reshape(b, h * w, c)))
        if self.with_ffn:
            with _island(mlp, source):
                message = self.norm2(self.mlp(torch.cat([_as(source, mlp), _as(message, mlp)], -1)))
        return source + message


    def forward_in_windows(self, stream: torch.Tensor, target: torch.Tensor, windows: int,
                           shift_mask: torch.Tensor | None, fp32_pieces: frozenset[str]) -> torch.Tensor:
        """``forward`` under autocast on tokens already in window order: ``stream`` the (N, HW, C) fp32 residual
        stream (the source), ``target`` the target's tokens in the same order. The ``fp32_pieces`` run in fp32,
        the others in autocast's dtype; the attention runs fused (``scaled_dot_product_attention``, the windows as
        heads). Returns the updated stream."""
        n, tokens, c = stream.shape
        length = tokens // windows
        proj, attn, mlp = (piece in fp32_pieces for piece in PIECES)
        low = torch.get_autocast_dtype(stream.device.type)
        with _island(proj, stream):
            source_in = stream if proj else stream.to(low)
            target_in = target.float() if proj else target.to(low)
            q, k, v = (p(x).view(n, windows, length, c) for p, x in ((self.q_proj, source_in), (self.k_proj, target_in),
                                                                     (self.v_proj, target_in)))
        with _island(attn, stream):
            q, k, v = (x.float() if attn else x.to(low) for x in (q, k, v))
            mask = None if shift_mask is None else shift_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).view(n, tokens, c)
        with _island(proj, stream):
            message = self.norm1(self.merge(out.float() if proj else out))
        if self.with_ffn:
            with _island(mlp, stream):
                inputs = [stream, message.float()] if mlp else [source_in.to(low), message.to(low)]
                message = self.norm2(self.mlp(torch.cat(inputs, -1)))
        return stream + message


class _TransformerBlock(nn.Module):
    """Self-attention, then cross-attention with a feed-forward part."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.self_attn = _AttentionLayer(d, with_ffn=False)
        self.cross_attn_ffn = _AttentionLayer(d, with_ffn=True)

    def forward(self, source: torch.Tensor, target: torch.Tensor, h: int, w: int, splits: int,
                shift_mask: torch.Tensor | None, fp32_pieces: frozenset[str] = frozenset(PIECES)) -> torch.Tensor:
        source = self.self_attn(source, source, h, w, splits, shift_mask, fp32_pieces)
        return self.cross_attn_ffn(source, target, h, w, splits, shift_mask, fp32_pieces)


class FeatureTransformer(nn.Module):
    """Six blocks of windowed attention (every second one shifted) that let two feature maps see each other."""

    def __init__(self, num_layers: int = 6, d: int = FEATURE_CHANNELS) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_TransformerBlock(d) for _ in range(num_layers)])

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, splits: int,
                fp32_pieces: frozenset[str] = frozenset(PIECES)) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated (f0, f1), each (B, C, H, W); both are transformed with the same weights in one batch."""
        b, c, h, w = f0.shape
        if torch.is_autocast_enabled(f0.device.type) and splits > 1:
            return self._forward_in_windows(f0, f1, splits, fp32_pieces)
        mask = shifted_window_mask(h, w, splits, f0.device).to(f0.dtype) if splits > 1 else None
        both = torch.cat([f0, f1]).flatten(2).transpose(1, 2)  # (2B, HW, C)
        for i, layer in enumerate(self.layers):
            other = torch.cat(both.chunk(2)[::-1])
            both = layer(both, other, h, w, splits, mask if i % 2 == 1 else None, fp32_pieces)
        out = both.view(2 * b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return out[:b], out[b:]

    def _forward_in_windows(self, f0: torch.Tensor, f1: torch.Tensor, splits: int,
                            fp32_pieces: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` under autocast (pieces in reduced precision but for ``fp32_pieces``), in window order.

        Projections, norms and feed-forward layers work token by token, so the tokens can be kept in the order
        the attention windows group them: one gather per block (plain or shifted windows) replaces the rolls,
        window partitions and concatenations of every projection, and the attention runs fused
        (``scaled_dot_product_attention``, the windows as heads). The residual stream stays fp32.
        """
        b, c, h, w = f0.shape
        orders = [_window_order(h, w, splits, shifted, f0.device) for shifted in (False, True)]
        mask = shifted_window_mask(h, w, splits, f0.device).unsqueeze(0)  # (1, windows, L, L), additive
        stream = torch.cat([f0, f1]).flatten(2).transpose(1, 2).float()  # (2B, HW, C), token order
        position = torch.arange(h * w, device=f0.device)  # the token at each position of ``stream``
        for i, block in enumerate(self.layers):
            order = orders[i % 2]
            # Move the stream from its current order to this block's windows: gather by the inverse of ``position``.
            inverse = torch.empty_like(position)
            inverse[position] = torch.arange(h * w, device=f0.device)
            stream = stream.index_select(1, inverse[order])
            position = order
            shifted = mask if i % 2 == 1 else None
            other = torch.cat(stream.chunk(2)[::-1])  # the cross-attention's target: the other image before the block
            stream = block.self_attn.forward_in_windows(stream, stream, splits * splits, shifted, fp32_pieces)
            stream = block.cross_attn_ffn.forward_in_windows(stream, other, splits * splits, shifted, fp32_pieces)
        inverse = torch.empty_like(position)
        inverse[position] = torch.arange(h * w, device=f0.device)
        out = stream.index_select(1, inverse).view(2 * b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return out[:b], out[b:]

    def piece_modules(self, pieces: frozenset[str]) -> list[nn.Module]:
        """The modules holding the weights of ``pieces`` (of ``PIECES``; the attention has none of its own)."""
        layers = [m for m in self.modules() if isinstance(m, _AttentionLayer)]
        found: list[nn.Module] = []
        if "projections" in pieces:
            found += [p for layer in layers
                      for p in (layer.q_proj, layer.k_proj, layer.v_proj, layer.merge, layer.norm1)]
        if "mlp" in pieces:
            found += [p for layer in layers if layer.with_ffn for p in (layer.mlp, layer.norm2)]
        return found


class FeatureFlowAttention(nn.Module):
    """Propagates flow along feature similarity (global, or within a small window)."""

    def __init__(self, c: int = FEATURE_CHANNELS) -> None:
        super().__init__()
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c)

    def forward(self, feature: torch.Tensor, flow: torch.Tensor, radius: int) -> torch.Tensor:
        b, c, h, w = feature.shape
        rows = feature.flatten(2).transpose(1, 2)  # (B, HW, C)
        query = self.q_proj(rows)
        if radius <= 0:
            key = self.k_proj(query)  # the trained weights expect the key projected from the query
            prob = torch.softmax(torch.matmul(query, key.transpose(1, 2)) / (c ** 0.5), -1)
            out = torch.matmul(prob, flow.flatten(2).transpose(1, 2))
            return out.transpose(1, 2).reshape(b, 2, h, w)
        k = 2 * radius + 1
        key = self.k_proj(rows).transpose(1, 2).reshape(b, c, h, w)
        key_win = F.unfold(key, k, padding=radius).view(b, c, k * k, h * w)  # zero keys beyond the border
        flow_win = F.unfold(flow, k, padding=radius).view(b, 2, k * k, h * w)
        scores = torch.einsum("bnc,bckn->bnk", query, key_win) / (c ** 0.5)
        prob = torch.softmax(scores, -1)
        return torch.einsum("bnk,bdkn->bdn", prob, flow_win).view(b, 2, h, w)


def _pixel_grid(b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
    return torch.stack([xs, ys]).to(like.dtype).unsqueeze(0).expand(b, 2, h, w)


def global_matching_flow(f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
    """Flow from f0 to f1 as the softmax-expected position of each f0 pixel over all of f1."""
    b, c, h, w = f0.shape
    corr = torch.matmul(f0.flatten(2).transpose(1, 2), f1.flatten(2)) / (c ** 0.5)  # (B, HW, HW)
    grid = _pixel_grid(b, h, w, f0)
    target = torch.matmul(torch.softmax(corr, -1), grid.flatten(2).transpose(1, 2))  # (B, HW, 2)
    return target.transpose(1, 2).reshape(b, 2, h, w) - grid


def local_matching_flow(f0: torch.Tensor, f1: torch.Tensor, radius: int) -> torch.Tensor:
    """Flow residual: softmax-expected offset of each f0 pixel over a (2r+1)^2 window of f1 inside the frame."""
    b, c, h, w = f0.shape
    padded = F.pad(f1, (radius, radius, radius, radius))
    offsets = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    corr = torch.stack([(f0 * padded[:, :, radius + dy:radius + dy + h, radius + dx:radius + dx + w]).sum(1)
                        for dx, dy in offsets], 1) / (c ** 0.5)  # (B, k*k, H, W)
    ys = torch.arange(h, device=f0.device).view(1, h, 1)
    xs = torch.arange(w, device=f0.device).view(1, 1, w)
    off = torch.tensor(offsets, device=f0.device)
    valid = ((xs + off[:, 0].view(-1, 1, 1) >= 0) & (xs + off[:, 0].view(-1, 1, 1) < w)
             & (ys + off[:, 1].view(-1, 1, 1) >= 0) & (ys + off[:, 1].view(-1, 1, 1) < h))
    corr = corr.masked_fill(~valid, -1e9 if f0.dtype == torch.float32 else -1e4)
    prob = torch.softmax(corr, 1)
    return torch.einsum("bkhw,kd->bdhw", prob, off.to(prob.dtype)).contiguous()


class GMFlow(nn.Module):
    """Optical flow between two images (RGB/BGR as trained, [0, 1]); sizes a multiple of 64 for the windows.

    Under autocast (bf16/fp16) the parts named in a call's ``fp32_parts`` (of ``PARTS``; default all) run as
    fp32 islands: the CNN backbone, the pieces of the transformer (``PIECES``) at the coarse (1/8) and at the
    fine (1/4) scale, and the matching head (global and local matching, flow propagation, upsampling). The
    transformer's residual stream and the flows are fp32 whatever the parts compute in. The transformer's
    weights serve both scales; ``fine_transformer``, when set, is a copy of it the fine scale uses instead
    (holding its weights in another dtype than the coarse scale's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = CNNEncoder(FEATURE_CHANNELS)
        self.transformer = FeatureTransformer(6, FEATURE_CHANNELS)
        self.fine_transformer: FeatureTransformer | None = None
        self.feature_flow_attn = FeatureFlowAttention(FEATURE_CHANNELS)
        self.upsampler = nn.Sequential(nn.Conv2d(2 + FEATURE_CHANNELS, 256, 3, 1, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(256, UPSAMPLE_FACTOR ** 2 * 9, 1, 1, 0))
        self._warp = BackWarp("zeros")

    def part_modules(self, parts: frozenset[str]) -> list[nn.Module]:
        """The modules holding the weights of ``parts`` (of ``PARTS``; the attention has none of its own); the
        fine scale's pieces only where ``fine_transformer`` holds them apart."""
        unknown = parts - set(PARTS)
        if unknown:
            raise ValueError(f"GMFlow's parts are {', '.join(PARTS)}, got {', '.join(sorted(unknown))}")
        found: list[nn.Module] = [self.backbone] if "backbone" in parts else []
        found += self.transformer.piece_modules(pieces_at("coarse", parts))
        if self.fine_transformer is not None:
            found += self.fine_transformer.piece_modules(pieces_at("fine", parts))
        if "matching" in parts:
            found += [self.feature_flow_attn, self.upsampler]
        return found

    def encode(self, img: torch.Tensor, fp32_parts: frozenset[str] = frozenset(PARTS)) -> FlowFeatures:
        """Per-image features (each image of the batch independently): cacheable per frame."""
        fp32 = "backbone" in fp32_parts
        with _island(fp32, img):
            img = _as(img, fp32)
            mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
            return self.backbone((img - mean) / std)

    def _convex_upsample(self, flow: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """Upsample by UPSAMPLE_FACTOR, each fine pixel a learnt convex mix of its 3x3 coarse neighbours."""
        b, _, h, w = flow.shape
        r = UPSAMPLE_FACTOR
        mask = torch.softmax(self.upsampler(torch.cat([flow, feature], 1)).view(b, 1, 9, r, r, h, w), 2)
        neighbours = F.unfold(r * flow, 3, padding=1).view(b, 2, 9, 1, 1, h, w)
        up = (mask * neighbours).sum(2)  # (B, 2, r, r, H, W)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, r * h, r * w)

    def bidirectional_flow(self, a: FlowFeatures, b: FlowFeatures,
                           fp32_parts: frozenset[str] = frozenset(PARTS)) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows a->b and b->a (fp32) at the input resolution for a batch of pairs of encoded images."""
        n = a.coarse.shape[0]
        a, b = FlowFeatures(*(f.float() for f in a)), FlowFeatures(*(f.float() for f in b))
        head = "matching" in fp32_parts
        # Coarse scale: the transformer is symmetric in its two inputs, so one pass serves both directions.
        c0, c1 = (add_window_position(x, ATTN_SPLITS[0]) for x in (a.coarse, b.coarse))
        t0, t1 = self.transformer(c0, c1, ATTN_SPLITS[0], pieces_at("coarse", fp32_parts))
        src, dst = torch.cat([t0, t1]), torch.cat([t1, t0])  # direction a->b first, then b->a
        with _island(head, src):
            flow = global_matching_flow(src, dst).float()
            flow = self.feature_flow_attn(src, flow, radius=0).float()
        # Fine scale: refine each direction against the target warped by the current flow.
        flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
        src = torch.cat([a.fine, b.fine])
        dst = self._warp(torch.cat([b.fine, a.fine]), flow)
        src, dst = (add_window_position(x, ATTN_SPLITS[1]) for x in (src, dst))
        fine = self.transformer if self.fine_transformer is None else self.fine_transformer
        src, dst = fine(src, dst, ATTN_SPLITS[1], pieces_at("fine", fp32_parts))
        with _island(head, src):
            flow = flow + local_matching_flow(src, dst, LOCAL_RADIUS).float()
            flow = self.feature_flow_attn(src, flow, radius=1).float()
            flow = self._convex_upsample(flow, src).float()
        return flow[:n], flow[n:]

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """Flow img0 -> img1 (pixels, channels dx, dy)."""
        feats = self.encode(torch.cat([img0, img1]))
        n = img0.shape[0]
        a = FlowFeatures(feats.coarse[:n], feats.fine[:n])
        b = FlowFeatures(feats.coarse[n:], feats.fine[n:])
        return self.bidirectional_flow(a, b)[0]

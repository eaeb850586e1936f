"""The training augmentations applied to whole batches on the training device (``DATA.AUGMENT_ON device``).

The PIL pipelines of ``transforms.py`` run per image in the loader's workers: at 224 px a CPU core produces
about 45 two-view images/s (benchmarks/loader_throughput.py), so a fast GPU needs more cores than a node
has.  Here the loader only hands over uint8 images of one size; each op below draws its parameters for
every image of the batch from one generator and applies them as batched tensor operations, with the
same distribution as its PIL counterpart:
- ``crop``: RandomResizedCrop's box (area fraction uniform in ``scale``, log aspect ratio uniform, ten
  tries, then the centre crop clamped to the ratio range), resampled by ``roi_align`` (bilinear, 2 x 2
  samples per output pixel, like PIL's antialiased resize when shrinking);
- ``jitter``: ColorJitter's brightness, contrast, saturation and hue factors per image, applied in one
  random order per batch (torchvision draws the order per image: the per-image distribution is the same);
- ``gray``, ``flip``: per image with their probability; ``blur``: a Gaussian of sigma in [0.1, 2.0] per
  image.
Randomness comes from a generator seeded by (seed, epoch, step, rank): exact after a resume.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.functional import rgb_to_grayscale



def uniform(g, n, lo, hi, device):
    """n draws uniform in [lo, hi) from g on device."""
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def gray(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_grayscale(x)  # PIL's "L" weights, batched


def crop_boxes(n: int, h, w, scale, ratio, g, device) -> torch.Tensor:
    """(n, 4) boxes x0, y0, x1, y1 in pixels, RandomResizedCrop's sampling for n images of h x w (ints: one
    size; or (n,) tensors: one size per image, as decoded JPEGs have)."""
    h = torch.as_tensor(h, dtype=torch.float64, device=device).expand(n)
    w = torch.as_tensor(w, dtype=torch.float64, device=device).expand(n)
    tries = 10
    target = (h * w).float()[:, None] * uniform(g, n * tries, scale[0], scale[1], device).view(n, tries)
    log_r = uniform(g, n * tries, math.log(ratio[0]), math.log(ratio[1]), device).view(n, tries)
    aspect = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    hf, wf = h.float()[:, None], w.float()[:, None]
    ok = (cw > 0) & (cw <= wf) & (ch > 0) & (ch <= hf)
    first = torch.argmax(ok.to(torch.uint8), dim=1, keepdim=True)  # the first try that fits
    any_ok = ok.any(dim=1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    # fallback: the whole image, clamped to the ratio range, centred
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w).float()
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h).float()
    cw, ch = torch.where(any_ok, cw, fw), torch.where(any_ok, ch, fh)
    # top-left uniform over the valid integer positions (torch.randint(0, H - h + 1))
    hf, wf = hf.squeeze(1), wf.squeeze(1)
    y0 = torch.floor(torch.rand(n, generator=g, device=device) * (hf - ch + 1))
    x0 = torch.floor(torch.rand(n, generator=g, device=device) * (wf - cw + 1))
    y0 = torch.where(any_ok, y0, (hf - ch) // 2)
    x0 = torch.where(any_ok, x0, (wf - cw) // 2)
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    rois = torch.cat([torch.arange(len(x), device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def crop_resize_each(images: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``crop_resize`` for images of different sizes (a list of (3, H_i, W_i) in [0, 1]): one crop each."""
    return torch.cat([crop_resize(img[None], box[None], size) for img, box in zip(images, boxes)])


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, 0) for c in
                         [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]], 0)  # (6, 3, N, H, W)
    idx = i.unsqueeze(0).unsqueeze(0).expand(1, 3, *i.shape)
    return table.gather(0, idx).squeeze(0).permute(1, 0, 2, 3)


def adjust(x: torch.Tensor, kind: str, factor: torch.Tensor) -> torch.Tensor:
    """One ColorJitter op with a factor per image, on [0, 1] images (N, 3, H, W)."""
    f = _per_image(factor)
    if kind == "brightness":
        return (x * f).clamp(0, 1)
    if kind == "contrast":
        return (f * x + (1 - f) * gray(x).mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    if kind == "saturation":
        return (f * x + (1 - f) * gray(x)).clamp(0, 1)
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((h + factor.view(-1, 1, 1)) % 1.0, s, v)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian of ``kernel`` taps with one sigma per image (reflect padding, as torchvision)."""
    n, c, h, w = x.shape
    r = torch.arange(kernel, device=x.device, dtype=x.dtype) - kernel // 2
    k = torch.exp(-0.5 * (r[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, kernel)
    y = F.pad(x.reshape(1, n * c, h, w), (kernel // 2,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel, 1), groups=n * c)
    return y.view(n, c, h, w)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(_per_image(mask), a, b)

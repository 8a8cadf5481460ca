"""The cost of attached images: checking and cleaning one (on submission), and building the
model's downscaled copy (once per image per worker; later calls hit the cache).

    .venv/bin/python benchmarks/image_bench.py --runs 5

Images are made with Pillow (a gradient with noise, so they compress like photos and
screenshots do). Figures are medians of N runs, in one process on this machine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageFilter

from storage.image_files import check_image, for_model

CASES = [
    ("JPEG", (1280, 800)),
    ("PNG", (1280, 800)),
    ("JPEG", (4000, 3000)),
    ("PNG", (3000, 2000)),
    ("JPEG", (7000, 5700)),
]


def sample(fmt: str, size: tuple[int, int]) -> bytes:
    base = Image.linear_gradient("L").resize(size).convert("RGB")
    noise = Image.frombytes("L", (256, 256), os.urandom(256 * 256)).resize(size).convert("RGB")
    image = Image.blend(base, noise.filter(ImageFilter.BLUR), 0.2)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def median_ms(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| image | file | check and clean | model's copy | copy sent |")
    print("|---|---|---|---|---|")
    for fmt, size in CASES:
        data = sample(fmt, size)
        name = f"a.{fmt.lower()}"
        checked = check_image(name, data)
        check = median_ms(lambda n=name, d=data: check_image(n, d), args.runs)
        copy = median_ms(lambda c=checked: for_model(c.data, c.content_type), args.runs)
        sent, _, width, height = for_model(checked.data, checked.content_type)
        megapixels = size[0] * size[1] / 1e6
        print(
            f"| {fmt} {size[0]}×{size[1]} ({megapixels:.1f} MP) | {len(data) / 1e6:.2f} MB "
            f"| {check:.0f} ms | {copy:.0f} ms | {width}×{height}, {len(sent) / 1e6:.2f} MB |"
        )


if __name__ == "__main__":
    main()

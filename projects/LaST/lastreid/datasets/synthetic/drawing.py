"""Drawing synthetic people: identity cues that never change (skin, hair, head, body, shoes,
a bag) and outfits that do (upper / lower colours, sleeves, trousers, chest pattern), on a
varied background with per-image jitter, brightness, colour cast and noise."""

import colorsys

import numpy as np

IMAGE_SIZE = (128, 64)  # (height, width)


def hsv_colour(rng, sat, val):
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))) * 255


def new_person(rng):
    light, dark = np.array([238.0, 200.0, 172.0]), np.array([88.0, 58.0, 42.0])
    has_bag = rng.random() < 0.7
    return dict(
        skin=light + (dark - light) * rng.random() + rng.normal(0, 6, 3),
        hair=hsv_colour(rng, (0.2, 0.9), (0.12, 0.9)),
        long_hair=rng.random() < 0.4,
        head_rx=rng.uniform(7.0, 9.5),
        height=rng.uniform(0.80, 0.97),
        torso_w=rng.uniform(15.0, 24.0),
        shoes=hsv_colour(rng, (0.5, 1.0), (0.3, 1.0)),
        bag=hsv_colour(rng, (0.5, 1.0), (0.3, 1.0)) if has_bag else None,
        bag_side=rng.choice([-1, 1]),
    )


def new_outfit(rng):
    return dict(
        upper=hsv_colour(rng, (0.0, 1.0), (0.15, 1.0)),
        lower=hsv_colour(rng, (0.0, 0.9), (0.1, 0.9)),
        pattern=rng.choice(["plain", "stripes", "band"]),
        pattern_colour=hsv_colour(rng, (0.0, 1.0), (0.2, 1.0)),
        long_sleeves=rng.random() < 0.5,
        long_trousers=rng.random() < 0.7,
    )


def _rect(canvas, y0, y1, x0, x1, colour):
    h, w, _ = canvas.shape
    y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = colour


def _ellipse(canvas, cy, cx, ry, rx, colour, below=None):
    """Fills an ellipse; with `below`, only its rows above y = below (a hair cap)."""
    ys, xs = np.ogrid[: canvas.shape[0], : canvas.shape[1]]
    mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
    if below is not None:
        mask = mask & (ys < below)
    canvas[mask] = colour


def _background(rng, tint):
    h, w = IMAGE_SIZE
    base = hsv_colour(rng, (0.0, 0.4), (0.3, 0.9)) if tint is None else tint + rng.normal(0, 12, 3)
    ramp = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(-25, 25)
    canvas = np.broadcast_to(base + ramp, (h, w, 3)).copy()
    for _ in range(rng.integers(0, 3)):  # faint clutter behind the person
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        _rect(
            canvas,
            y,
            y + rng.uniform(8, 40),
            x,
            x + rng.uniform(6, 24),
            0.5 * canvas[min(int(y), h - 1), min(int(x), w - 1)]
            + 0.5 * hsv_colour(rng, (0, 0.6), (0.2, 1)),
        )
    return canvas


def render_person(person, outfit, rng, tint=None, scale=1.0):
    """One 128x64 RGB uint8 image of `person` wearing `outfit`."""
    h, w = IMAGE_SIZE
    canvas = _background(rng, tint)
    s = scale * rng.uniform(0.92, 1.06)
    hp = person["height"] * (h - 8) * s
    top = (h - hp) / 2 + rng.uniform(-4, 4)
    cx = w / 2 + rng.uniform(-5, 5)
    y = lambda frac: top + frac * hp  # noqa: E731  (body proportions as fractions of height)
    tw, rx = person["torso_w"] * s, person["head_rx"] * s
    skin, upper, lower = person["skin"], outfit["upper"], outfit["lower"]

    # Legs, shoes (identity colour), with a per-image walking gap.
    gap = rng.uniform(1, 4)
    knee = y(0.96) if outfit["long_trousers"] else y(0.68)
    for x0, x1 in ((cx - tw / 2 + 1, cx - gap / 2), (cx + gap / 2, cx + tw / 2 - 1)):
        _rect(canvas, y(0.52), knee, x0, x1, lower)
        _rect(canvas, knee, y(0.96), x0, x1, skin)
        _rect(canvas, y(0.94), y(1.0), x0 - 1.5, x1 + 1.5, person["shoes"])
    # Arms and hands, sleeves by outfit.
    elbow = y(0.48) if outfit["long_sleeves"] else y(0.28)
    for x0, x1 in ((cx - tw / 2 - 4 * s, cx - tw / 2), (cx + tw / 2, cx + tw / 2 + 4 * s)):
        _rect(canvas, y(0.19), elbow, x0, x1, upper)
        _rect(canvas, elbow, y(0.53), x0, x1, skin)
    # Torso with the outfit's chest pattern.
    _rect(canvas, y(0.18), y(0.53), cx - tw / 2, cx + tw / 2, upper)
    if outfit["pattern"] == "stripes":
        for yy in np.arange(y(0.22), y(0.50), 5.0):
            _rect(canvas, yy, yy + 2, cx - tw / 2, cx + tw / 2, outfit["pattern_colour"])
    elif outfit["pattern"] == "band":
        _rect(canvas, y(0.29), y(0.35), cx - tw / 2, cx + tw / 2, outfit["pattern_colour"])
    # Head: face, neck and hair cap; long hair falls beside the neck onto the shoulders.
    cy, ry = y(0.085), 0.085 * hp
    _rect(canvas, y(0.15), y(0.19), cx - 2.5, cx + 2.5, skin)
    _ellipse(canvas, cy, cx, ry, rx, skin)
    _ellipse(canvas, cy, cx, ry * 1.08, rx * 1.08, person["hair"], below=cy + 0.1 * ry)
    if person["long_hair"]:
        for x0 in (cx - rx - 1, cx + rx - 3):
            _rect(canvas, cy, y(0.30), x0, x0 + 4, person["hair"])
    # Bag on a fixed side with a strap across the chest.
    if person["bag"] is not None:
        side = person["bag_side"]
        bx = cx + side * (tw / 2 + 3 * s)
        _rect(canvas, y(0.34), y(0.58), bx - 5 * s, bx + 5 * s, person["bag"])
        for t in np.linspace(0, 1, 14):
            sy, sx = y(0.19) + t * (y(0.36) - y(0.19)), cx - side * tw / 2 + t * side * tw
            _rect(canvas, sy, sy + 2, sx - 1, sx + 1, person["bag"])

    # Lighting and sensor noise.
    canvas = canvas * rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
    canvas += rng.normal(0, 5, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)

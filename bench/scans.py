"""Generated stand-ins for scans of three kinds of archive original, for bench/quality.py.

Each is what a scanner or camera makes of the original, not a clean drawing: the scene is
drawn at twice the size and averaged down (edges land between pixels), blurred by the optics
(Gaussian, sigma 0.7 px), and given sensor grain (sigma :data:`GRAIN` grey levels, slightly
correlated as demosaicing leaves it) with a little independent colour noise. The paper or plate
under the ink has its own texture. A noise-free drawing would mislead both ways: a lossless
codec makes it some twenty times smaller than JPEG, and JPEG's errors on flat colour are not
those it makes on a real scan's grain. Everything is seeded, so each run draws the same pixels.

- ``stars``: a scanned astronomical glass plate (a positive, 1800x1200). Some ten thousand stars
  of a few pixels, most faint, slightly blue or orange, bright ones saturated with a halo, on a
  dark sky with plate fog, vignetting and emulsion grain, a few dust specks. Small coloured
  points on dark ground: where 4:2:0 chroma smears colour most.
- ``map``: a scanned hand-coloured printed map (1800x1200). Cream laid paper with mottling and
  fibres, watercolour washes over regions, brown contour lines, blue rivers and red roads one
  to two pixels wide, a black graticule and lettering. Thin coloured lines on a light ground.
- ``rubrication``: a scanned manuscript leaf on parchment (1500x2000). Mottled, soiled skin with
  follicle marks and ruling, a justified column of brown-black text with red rubrics, red and
  blue paragraph marks, a large blue initial, and the other side's text showing through.
  Red detail the size of a letter stroke, the commonest colour detail in special collections.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pyvips
from scipy import ndimage  # scikit-image's own dependency

#: Luminance grain of the scanner, grey levels (sigma); the plate's emulsion adds its own.
GRAIN = 1.8
#: Independent noise per channel, grey levels (sigma).
COLOUR_NOISE = 0.6
OPTICS_SIGMA = 0.7
Array = np.ndarray
LATIN = (
    "in principio erat verbum et verbum erat apud deum et deus erat verbum hoc erat in "
    "principio apud deum omnia per ipsum facta sunt et sine ipso factum est nihil quod factum "
    "est in ipso vita erat et vita erat lux hominum et lux in tenebris lucet et tenebrae eam "
    "non conprehenderunt fuit homo missus a deo cui nomen erat iohannes hic venit in "
    "testimonium ut testimonium perhiberet de lumine ut omnes crederent per illum"
)


def vips(array: Array) -> pyvips.Image:
    return pyvips.Image.new_from_array(np.ascontiguousarray(array, dtype=np.float32))


def blur(array: Array, sigma: float) -> Array:
    blurred = vips(array).gaussblur(sigma, precision="float", min_ampl=0.002)
    return np.asarray(blurred.numpy(), dtype=np.float32)


def mottle(rng: np.random.Generator, height: int, width: int, cell: int) -> Array:
    """Smooth noise of about unit spread with features of about ``cell`` pixels."""
    small = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)
    big = ndimage.zoom(small, cell, order=3, grid_mode=True, mode="grid-mirror")
    return big[cell : cell + height, cell : cell + width]


def grain(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, size: float) -> Array:
    """Noise of spread ``sigma`` whose specks are about ``size`` pixels (a blur, renormalised)."""
    noise = blur(rng.standard_normal(shape).astype(np.float32), size)
    return noise * (sigma / float(noise.std()))


def scanned(scene: Array, rng: np.random.Generator, extra_grain: float = 0.0) -> pyvips.Image:
    """``scene`` (float RGB, 0..255, drawn at twice the size) as a scanner records it."""
    image = vips(scene).shrink(2, 2).gaussblur(OPTICS_SIGMA, precision="float")
    pixels = np.asarray(image.numpy(), dtype=np.float32)
    height, width = pixels.shape[:2]
    luma = grain(rng, (height, width), float(np.hypot(GRAIN, extra_grain)), 0.5)
    colour = rng.standard_normal(pixels.shape).astype(np.float32) * COLOUR_NOISE
    out = np.clip(np.rint(pixels + luma[..., None] + colour), 0, 255).astype(np.uint8)
    return pyvips.Image.new_from_array(out).copy(interpretation="srgb")


def over(ground: Array, alpha: Array, colour: tuple[float, float, float]) -> Array:
    """Paint ``colour`` over ``ground`` with coverage ``alpha`` (0..1, one band)."""
    a = np.clip(alpha, 0, 1)[..., None]
    return ground * (1 - a) + np.asarray(colour, dtype=np.float32) * a


def lines(height: int, width: int, paths: list[list[tuple[float, float]]], width_px: int) -> Array:
    """Coverage (0..1) of polylines ``width_px`` pixels wide, softened as a pen's edge is."""
    mask = np.zeros((height, width), np.float32)
    for path in paths:
        for (x0, y0), (x1, y1) in itertools.pairwise(path):
            count = int(np.hypot(x1 - x0, y1 - y0) * 2) + 2
            x, y = np.linspace(x0, x1, count).astype(int), np.linspace(y0, y1, count).astype(int)
            for dx, dy in itertools.product(range(width_px), repeat=2):
                across, down = x + dx, y + dy
                inside = (across >= 0) & (across < width) & (down >= 0) & (down < height)
                mask[down[inside], across[inside]] = 1
    return blur(mask, 0.6)


def wander(rng: np.random.Generator, start: tuple[float, float], heading: float, steps: int,
           step: float, turn: float) -> list[tuple[float, float]]:  # fmt: skip
    """A meandering path: a river or a country road."""
    x, y = start
    path = [(x, y)]
    for _ in range(steps):
        heading += rng.normal(0, turn)
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        path.append((x, y))
    return path


def text_rgba(markup: str, width: int, font: str, dpi: int) -> Array:
    image = pyvips.Image.text(markup, width=width, font=font, dpi=dpi, justify=True, rgba=True)
    return np.asarray(image.numpy(), dtype=np.float32)


def paste(ground: Array, rgba: Array, left: int, top: int, opacity: Array | float = 1.0) -> None:
    """Composite the RGBA ``rgba`` onto ``ground`` in place, its top left at (left, top)."""
    height = min(rgba.shape[0], ground.shape[0] - top)
    width = min(rgba.shape[1], ground.shape[1] - left)
    part = rgba[:height, :width]
    region = ground[top : top + height, left : left + width]
    alpha = part[..., 3] / 255
    if isinstance(opacity, np.ndarray):
        alpha = alpha * opacity[top : top + height, left : left + width]
    else:
        alpha = alpha * opacity
    region[:] = region * (1 - alpha[..., None]) + part[..., :3] * alpha[..., None]


# stars -----------------------------------------------------------------------------------------


def stars(seed: int = 11, width: int = 1800, height: int = 1200) -> pyvips.Image:
    rng = np.random.default_rng(seed)
    h, w = 2 * height, 2 * width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
    glow = np.clip(mottle(rng, h, w, 500), 0, None)
    fog = 24 - 14 * radius**2 + 3 * mottle(rng, h, w, 300) + 5 * glow
    sky = np.stack([fog * 0.96, fog, fog * 1.08], axis=-1)
    light = star_light(rng, h, w)
    saturated = 238 - sky  # the emulsion's response: linear for faint stars, a flat top for bright
    image = sky + saturated * (1 - np.exp(-light / 140))
    image = over(image, dust(rng, h, w), (225, 225, 225))
    return scanned(image, rng, extra_grain=2.5)


def star_light(rng: np.random.Generator, h: int, w: int) -> Array:
    """Summed light of the stars (RGB), each a Gaussian of a size that grows with its flux."""
    count = 10_000
    flux = np.minimum(150 * rng.random(count) ** -1.6, 2e6)
    x, y = rng.random(count) * (w - 2), rng.random(count) * (h - 2)
    tint = rng.normal(0, 1, count)
    colours = np.stack([1 + 0.15 * tint, np.ones(count), 1 - 0.18 * tint], axis=-1)
    sizes = (1.5, 2.2, 3.2, 5.0, 9.0)
    band = np.clip(np.log10(flux / 150) * 1.1, 0, len(sizes) - 1).astype(int)
    light = np.zeros((h, w, 3), np.float32)
    for index, sigma in enumerate(sizes):
        chosen = band == index
        points = splat(h, w, x[chosen], y[chosen], flux[chosen, None] * colours[chosen])
        light += blur(points, sigma)
    return light


def splat(h: int, w: int, x: Array, y: Array, values: Array) -> Array:
    """Point sources at sub-pixel positions, each spread over its four nearest pixels."""
    out = np.zeros((h, w, values.shape[1]), np.float32)
    left, top = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - left)[:, None], (y - top)[:, None]
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(out, (top + dy, left + dx), values * wx * wy)
    return out


def dust(rng: np.random.Generator, h: int, w: int) -> Array:
    """A few specks and one hair on the plate: sharp-edged, as dust on glass is."""
    yy, xx = np.mgrid[0:h, 0:w]
    specks = np.zeros((h, w), np.float32)
    for _ in range(40):
        x, y, radius = rng.integers(9, w - 9), rng.integers(9, h - 9), rng.integers(1, 4)
        box = (slice(y - radius, y + radius + 1), slice(x - radius, x + radius + 1))
        specks[box] = np.hypot(xx[box] - x, yy[box] - y) <= radius
    hair = wander(rng, (w * 0.3, h * 0.7), -0.4, 60, 6, 0.15)
    return specks * 0.8 + lines(h, w, [hair], 2) * 0.5


# map -------------------------------------------------------------------------------------------


def paper(rng: np.random.Generator, h: int, w: int, colour: tuple[int, int, int],
          spread: float) -> Array:  # fmt: skip
    """Paper or parchment: mottling at two scales and fibres along the sheet."""
    shade = 1 + spread * (mottle(rng, h, w, 240) + 0.5 * mottle(rng, h, w, 40))
    fibres = vips(rng.standard_normal((h // 2, w // 24)).astype(np.float32))
    streaks = fibres.resize(24, vscale=2, kernel="linear").crop(0, 0, w, h).numpy()
    shade = shade + spread * 0.4 * np.asarray(streaks, np.float32)
    return np.asarray(colour, np.float32) * shade[..., None]


def map_scan(seed: int = 12, width: int = 1800, height: int = 1200) -> pyvips.Image:
    rng = np.random.default_rng(seed)
    h, w = 2 * height, 2 * width
    image = paper(rng, h, w, (236, 226, 200), 0.025)
    image = washes(rng, image)
    relief = mottle(rng, h, w, 900) + 0.1 * mottle(rng, h, w, 300)
    image = over(image, contours(relief, 4, 1.6) * 0.8, (150, 100, 60))
    rivers = [wander(rng, (rng.uniform(0, w), 0), np.pi / 2, 140, 24, 0.25) for _ in range(9)]
    image = over(image, lines(h, w, rivers, 3), (45, 85, 175))
    towns = [(rng.uniform(150, w - 150), rng.uniform(150, h - 150)) for _ in range(14)]
    roads = [road(rng, towns[i], towns[(i * 5 + 3) % len(towns)]) for i in range(len(towns))]
    image = over(image, lines(h, w, roads, 3), (190, 35, 30))
    image = over(image, graticule(h, w, 360), (35, 30, 28))
    image = lettering(rng, image, towns)
    return scanned(image, rng)


def washes(rng: np.random.Generator, image: Array) -> Array:
    """Hand colouring: pale washes over regions, darker where the paint pooled at the edge."""
    h, w = image.shape[:2]
    region = mottle(rng, h, w, 500)
    tints = ((242, 196, 188), (204, 226, 178), (242, 226, 160), (196, 214, 236))
    for index, tint in enumerate(tints):
        inside = ((region > -1.2 + 0.7 * index) & (region <= -0.5 + 0.7 * index)).astype(np.float32)
        soft = blur(inside, 3)
        edge = np.clip(1 - np.abs(soft - 0.5) * 4, 0, 1)
        image = image * (1 - (soft * 0.45 + edge * 0.2)[..., None] * (1 - np.asarray(tint) / 255))
    return image


def contours(field: Array, levels: float, width: float) -> Array:
    """Coverage of the field's iso-lines, ``width`` pixels wide whatever the slope."""
    scaled = field * levels
    dy, dx = np.gradient(scaled)
    distance = np.abs(scaled - np.rint(scaled)) / np.maximum(np.hypot(dx, dy), 1e-3)
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def road(rng: np.random.Generator, a: tuple[float, float], b: tuple[float, float]) -> list:
    """A road between two towns, bending a little on the way."""
    steps = 12
    path = []
    for i in range(steps + 1):
        t = i / steps
        bend = np.sin(np.pi * t) * rng.normal(0, 25)
        path.append((a[0] + (b[0] - a[0]) * t + bend, a[1] + (b[1] - a[1]) * t - bend))
    return path


def graticule(h: int, w: int, step: int) -> Array:
    paths = [[(x, 0), (x + 40, h - 1)] for x in range(step // 2, w, step)]
    paths += [[(0, y), (w - 1, y + 25)] for y in range(step // 2, h, step)]
    return lines(h, w, paths, 2)


def lettering(rng: np.random.Generator, image: Array, towns: list) -> Array:
    """Town marks and names, and a title, printed in black."""
    words = ("Aldby", "Bruneholm", "Castra", "Dunmere", "Eskvale", "Fordwick", "Garth")
    for index, (x, y) in enumerate(towns):
        ring = pyvips.Image.black(28, 28).draw_circle(255, 14, 14, 9, fill=True)
        paste(image, text_ring(ring), int(x) - 14, int(y) - 14)
        name = f"<i>{words[index % len(words)]}{'' if index < 7 else ' Parva'}</i>"
        paste(image, text_rgba(name, 0, "serif 8", 300), int(x) + 20, int(y) - 50)
    title = text_rgba("<b>CHART OF THE NORTHERN HUNDREDS</b>", 0, "serif 16", 300)
    paste(image, title, (image.shape[1] - title.shape[1]) // 2, 60)
    return image


def text_ring(mask: pyvips.Image) -> Array:
    alpha = np.asarray(mask.numpy(), np.float32)
    ink = np.zeros((*alpha.shape, 4), np.float32)
    ink[..., :3] = 30
    ink[..., 3] = alpha
    return ink


# rubricated page -------------------------------------------------------------------------------

RED = "#a8261b"
BLUE = "#2b3f8f"


def rubrication(seed: int = 13, width: int = 1500, height: int = 2000) -> pyvips.Image:
    rng = np.random.default_rng(seed)
    h, w = 2 * height, 2 * width
    image = paper(rng, h, w, (226, 206, 166), 0.04)
    image = soiling(rng, image)
    margin, column = w // 7, w - 2 * (w // 7)
    text = text_rgba(leaf_markup(rng, 14), column, "serif 8", 600)
    showing = blur(text[::-1, ::-1, 3] / 255, 3)
    image = over(image, pad_to(showing, h, w, margin, margin + 60) * 0.07, (90, 70, 50))
    image = over(image, ruling(h, w, margin, column, 80), (150, 120, 95))
    density = np.clip(0.85 + 0.12 * mottle(rng, h, w, 60), 0.5, 1)
    paste(image, text, margin, margin + 60, density)
    initial = text_rgba(f'<span foreground="{BLUE}">I</span>', 0, "serif bold 60", 600)
    paste(image, initial, margin - initial.shape[1] - 20, margin, density)
    return scanned(image, rng)


def leaf_markup(rng: np.random.Generator, paragraphs: int) -> str:
    """Brown-black text, a red rubric before every third paragraph, red and blue paraphs."""
    parts = []
    for index in range(paragraphs):
        if index % 3 == 0:
            parts.append(f'<span foreground="{RED}">Incipit capitulum {index // 3 + 1}.</span>')
        mark = f'<span foreground="{RED if index % 2 else BLUE}">¶</span>'
        words = " ".join(rng.choice(LATIN.split(), int(rng.integers(40, 90))))
        parts.append(f'<span foreground="#2e2219">{mark} {words}.</span>')
    return "\n".join(parts)


def soiling(rng: np.random.Generator, image: Array) -> Array:
    """Darker, greyer margins where hands held the leaf; follicle marks; one water stain."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    nearest = np.minimum(np.minimum(xx, w - xx), np.minimum(yy, h - yy))
    edge = np.clip(1 - nearest / (w * 0.12), 0, 1)
    corner = np.clip(1 - np.hypot(w - xx, h - yy) / (w * 0.35), 0, 1)
    dirt = (edge * 0.08 + corner * 0.15) * (1 + 0.5 * mottle(rng, h, w, 80))
    image = image * (1 - dirt[..., None] * np.asarray([0.8, 0.9, 1.1]))
    follicles = np.clip(rng.standard_normal((h, w)) - 3.2, 0, None).astype(np.float32)
    image = over(image, blur(follicles, 1.5) * 3, (120, 95, 70))
    stain = np.clip(mottle(rng, h, w, 400) - 1.4, 0, 0.3)
    return over(image, blur(stain, 8), (150, 120, 70))


def ruling(h: int, w: int, margin: int, column: int, pitch: int) -> Array:
    paths = [[(margin, y), (margin + column, y)] for y in range(margin + 60, h - margin, pitch)]
    paths += [[(x, margin - 40), (x, h - margin)] for x in (margin - 10, margin + column + 10)]
    return lines(h, w, paths, 2) * 0.3


def pad_to(array: Array, h: int, w: int, left: int, top: int) -> Array:
    out = np.zeros((h, w), np.float32)
    part = array[: h - top, : w - left]
    out[top : top + part.shape[0], left : left + part.shape[1]] = part
    return out


GENERATORS: dict[str, Callable[[], pyvips.Image]] = {
    "stars": stars,
    "map": map_scan,
    "rubrication": rubrication,
}

"""Normal chest anatomy in two views, parameterised per patient.

The frontal (PA) view places a real lung template (templates.py) in the thorax, then rebuilds the
medial lung borders from our own mediastinum and heart so that the cardiothoracic ratio is ours to
set. The lateral view is drawn from the same patient parameters (lung height, heart size, domes,
spine), so findings appear consistently in both views.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxrgen.data.phantom.canvas import Canvas, blob, draw, smooth
from cxrgen.data.phantom.templates import pick_template


@dataclass
class Patient:
    """Per-study anatomy. Findings adjust these before drawing (cardiomegaly sets ctr, ...)."""
    template: int
    lung_map: np.ndarray       # template label map (1 image-left lung, 2 image-right lung)
    aspect: float              # template height / width
    female: bool
    body_w: float              # body half-width / R
    lung_w: float              # both lungs' width / R
    lung_top: float            # lung apex row / R
    inspiration: float         # lung height multiplier (low volumes < 1 < hyperinflation)
    ctr: float = 0.44          # cardiothoracic ratio
    mediastinum: float = 0.075  # upper mediastinal half-width / R
    knob: float = 0.035        # aortic knob radius / R
    dome_flat: float = 0.0     # 0 normal domes .. 1 flat (hyperinflation)
    dome_raise: tuple[float, float] = (0.015, 0.0)  # (image-left = patient right, image-right) / R
    lucency: float = 1.0       # lung air multiplier (hyperlucent > 1)
    scoliosis: float = 0.0     # lateral spine deviation amplitude / R
    kyphosis: float = 0.0      # extra thoracic curvature in the lateral view
    bone_gain: float = 1.0     # bone density (osteopenia < 1)
    spine_phase: float = 0.0
    ap_depth: float = 0.0      # extra chest depth in the lateral view / R (hyperinflation)


def sample_patient(rng: np.random.Generator) -> Patient:
    index, lung_map, aspect = pick_template(rng)
    return Patient(
        template=index, lung_map=lung_map, aspect=float(np.clip(aspect, 0.72, 1.05)),
        female=bool(rng.random() < 0.55), body_w=rng.uniform(0.40, 0.50), lung_w=rng.uniform(0.64, 0.74),
        lung_top=rng.uniform(0.12, 0.19), inspiration=rng.uniform(0.92, 1.04), ctr=rng.uniform(0.38, 0.47),
        mediastinum=rng.uniform(0.06, 0.08), knob=rng.uniform(0.028, 0.04),
        dome_raise=(rng.uniform(0.0, 0.03), rng.uniform(-0.01, 0.01)), spine_phase=rng.uniform(0, np.pi),
        scoliosis=rng.uniform(-0.004, 0.004),
    )


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def _lungs(p: Patient, R: int, cx: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image-left and image-right lung masks with medial borders moved to the mediastinal line."""
    w = p.lung_w * R
    h = w * p.aspect * p.inspiration * (1 + 0.25 * p.dome_flat)
    x0, y0 = int(round(cx - w / 2)), int(round(p.lung_top * R))
    h = min(h, R - y0 - 0.12 * R)
    lab = np.zeros((R, R), np.uint8)
    tpl = np.asarray(Image.fromarray(p.lung_map).resize((int(w), int(h)), Image.NEAREST))
    lab[y0:y0 + tpl.shape[0], max(x0, 0):x0 + tpl.shape[1]] = tpl[:, max(-x0, 0):R - x0]
    y, x = np.arange(R)[:, None], np.arange(R)[None, :]
    masks = []
    for side in (1, 2):
        m = lab == side
        rows, cols = m.any(1), m.any(0)
        first = np.where(rows, m.argmax(1), 0)
        last = np.where(rows, R - 1 - m[:, ::-1].argmax(1), 0)
        bottom = np.where(cols, R - 1 - m[::-1, :].argmax(0), -1).astype(np.float32)
        cidx = np.nonzero(cols)[0]
        bottom = np.interp(np.arange(R), cidx, bottom[cidx]).astype(np.float32)  # constant beyond the ends
        hi = bottom.max()
        raise_ = p.dome_raise[side - 1] * R
        bottom = bottom + p.dome_flat * (hi - bottom) - raise_
        med = cx - p.mediastinum * R if side == 1 else cx + p.mediastinum * R
        if side == 1:
            lat, medial = first, np.maximum(last, med)
        else:
            lat, medial = np.minimum(first, med), last
        ext = rows[:, None] & (x >= lat[:, None]) & (x <= medial[:, None]) & (y <= bottom[None, :])
        masks.append(ext)
    info = {"lung_box": (x0, y0, w, h), "dome_y": float(max(m.nonzero()[0].max() for m in masks))}
    return masks[0], masks[1], info


def _heart(p: Patient, R: int, cx: float, lungs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, dict]:
    """Heart mask sized so that (heart width) / (thoracic width) = p.ctr."""
    both = lungs[0] | lungs[1]
    cols = np.nonzero(both.any(0))[0]
    tw = float(cols.max() - cols.min())
    wh = p.ctr * tw
    right, left = cx - 0.33 * wh, cx + 0.67 * wh
    medial = both[:, int(cx - 0.12 * R):int(cx + 0.12 * R)].any(1)
    dome = float(np.nonzero(medial)[0].max()) if medial.any() else float(np.nonzero(both.any(1))[0].max())
    hh = 0.78 * wh if p.ctr < 0.5 else 0.78 * wh * (1 - 0.6 * (p.ctr - 0.5))
    cy = dome + 0.04 * R - hh / 2
    heart = blob(R, (right + left) / 2, cy, wh / 2, hh / 2, angle=0.25, edge=1.5)
    # the rotated ellipse is narrower than wh: stretch so the silhouette spans exactly [right, left]
    xs = np.nonzero((heart > 0.5).any(0))[0]
    s = wh / max(xs.max() - xs.min(), 1)
    heart = blob(R, (right + left) / 2, cy, wh / 2 * s, hh / 2, angle=0.25, edge=1.5)
    xs = np.nonzero((heart > 0.5).any(0))[0]
    return heart, {"heart_x": (float(xs.min()), float(xs.max())), "heart_cy": cy, "heart_h": hh,
                   "thoracic_x": (float(cols.min()), float(cols.max())), "ctr": float((xs.max() - xs.min()) / tw)}


def frontal(p: Patient, R: int, rng: np.random.Generator) -> Canvas:
    """PA view: body, lungs from a real template, heart, mediastinum, bones, breasts, vessels."""
    c = Canvas(R)
    y, x = c.grid
    cx = R * (0.5 + rng.uniform(-0.02, 0.02))
    # body: chord length through an elliptical trunk, narrowing to the neck at the top
    shoulder = R * (p.lung_top - rng.uniform(0.05, 0.08))
    half = R * (0.11 + (p.body_w - 0.11) * _smoothstep((y - shoulder) / (0.09 * R)))
    c.soft = 1.15 * np.sqrt(np.clip(1 - ((x - cx) / half) ** 2, 0, 1)).astype(np.float32)
    for sgn in (-1, 1):  # arms and humeral heads at the sides
        ax = cx + sgn * (p.body_w + 0.05) * R
        c.soft += 0.55 * blob(R, ax, shoulder + 0.5 * R, 0.05 * R, 0.55 * R, edge=6)
        c.bone += 0.3 * blob(R, cx + sgn * (p.body_w - 0.01) * R, shoulder + 0.06 * R, 0.04 * R, 0.045 * R, edge=4)
    left, right, info = _lungs(p, R, cx)
    heart, hinfo = _heart(p, R, cx, (left, right))
    x0, y0, w, h = info["lung_box"]
    knob_x, knob_y = cx + (p.mediastinum + 0.005) * R, y0 + 0.24 * h
    knob = blob(R, knob_x, knob_y, p.knob * R, p.knob * R * 1.1, edge=1.5)
    upper = (y < hinfo["heart_cy"]) & (np.abs(x - cx) < p.mediastinum * R)
    lungs = (left | right) & ~upper & (heart < 0.5) & (knob < 0.5)
    lungs_f = lungs.astype(np.float32)
    depth = 0.55 * smooth(lungs_f, 1.2) + 0.45 * smooth(lungs_f, 0.06 * R)
    c.air = 1.05 * p.lucency * depth * (0.8 + 0.25 * np.clip((y - y0) / h, 0, 1))
    c.extra += 0.12 * heart + 0.1 * knob
    # gastric bubble under the patient's left dome (image right)
    gx = cx + 0.17 * R
    gy = np.nonzero(right[:, int(gx)])[0].max() + 0.045 * R if right[:, int(gx)].any() else info["dome_y"]
    c.air += 0.35 * blob(R, gx, gy, 0.06 * R, 0.03 * R, edge=3) * (y > gy - 0.01 * R)
    if p.female:
        for sgn in (-1, 1):
            by = info["dome_y"] - rng.uniform(0.0, 0.05) * R
            b = blob(R, cx + sgn * 0.25 * R, by - 0.05 * R, 0.17 * R, 0.11 * R, edge=0.03 * R)
            c.soft += 0.12 * b * _smoothstep((y - by + 0.12 * R) / (0.1 * R))
    spine_x = cx + p.scoliosis * R * np.sin(2 * np.pi * (y - y0) / (1.4 * h) + p.spine_phase) * 2
    _spine_frontal(c, p, spine_x, y0, h)
    _ribs_frontal(c, p, cx, spine_x, y0, w, h, rng)
    _clavicles_scapulae(c, p, cx, y0, shoulder, rng)
    hila = [(cx - 0.09 * R - 0.2 * p.mediastinum * R, y0 + 0.45 * h), (cx + 0.1 * R, y0 + 0.42 * h)]
    c.extra += _vessels(R, hila, lungs, w, rng)
    c.marks.update(info, **hinfo, lungs=(left & lungs, right & lungs), lung_any=lungs, cx=cx, hila=hila,
                   knob=(knob_x, knob_y), spine_x=spine_x, shoulder=shoulder, heart=heart)
    return c


def _spine_frontal(c: Canvas, p: Patient, spine_x: np.ndarray, y0: float, h: float) -> None:
    y, x = c.grid
    R = c.R
    period = h / 10.5
    phase = ((y - y0) / period) % 1.0
    body = np.clip(1 - np.abs(x - spine_x) / (0.038 * R), 0, 1) ** 0.4
    disc = 0.55 + 0.45 * _smoothstep(np.minimum(phase, 1 - phase) / 0.12)
    spinous = np.exp(-((x - spine_x) / (0.008 * R)) ** 2) * (np.abs(phase - 0.55) < 0.22)
    c.bone += (0.25 * body * disc + 0.2 * spinous).astype(np.float32) * p.bone_gain
    c.marks["vertebra_period"] = period


def _ribs_frontal(c: Canvas, p: Patient, cx: float, spine_x: np.ndarray, y0: float, w: float, h: float,
                  rng: np.random.Generator) -> None:
    """Posterior ribs as bands of one curved coordinate (all ribs in a few array ops), anterior ribs fainter."""
    y, x = c.grid
    u = np.abs(x - spine_x) / (w / 2)
    v = y - h * (-0.1 * u + 0.32 * u ** 2)
    t = np.clip((v - y0 + 0.06 * h) / (1.08 * h), 0, None) ** 0.85 * 9.5
    k, frac = np.floor(t), t % 1.0
    width = 0.42
    prof = np.where(frac < width, 0.65 + 0.35 * ((2 * frac / width - 1) ** 4), 0.0)
    reach = (k < 10) & (t > 0)
    post = prof * reach * _smoothstep((u - 0.08) / 0.1) * _smoothstep((1.15 - u) / 0.15)
    t2 = (y - y0 - 0.1 * h + 0.25 * h * u) / h * 6.5
    anterior = ((t2 % 1.0) < 0.3) * (u > 0.35) * (u < 1.05) * (t2 > 0) * (t2 < 6)
    c.bone += ((0.16 * post + 0.05 * anterior) * p.bone_gain).astype(np.float32)
    c.marks.update(rib_t=t, rib_u=u)


def _clavicles_scapulae(c: Canvas, p: Patient, cx: float, y0: float, shoulder: float, rng: np.random.Generator) -> None:
    R = c.R
    strokes = []
    for sgn in (-1, 1):
        med = (cx + sgn * 0.045 * R, y0 + 0.035 * R)
        mid = (cx + sgn * 0.2 * R, y0 - 0.005 * R + rng.uniform(-0.01, 0.01) * R)
        lat = (cx + sgn * 0.36 * R, shoulder + 0.02 * R)
        strokes.append(("line", [med, mid, lat], 0.03 * R, 1.0))
    c.bone += 0.3 * draw(R, strokes, blur=0.9) * p.bone_gain
    scap = []
    for sgn in (-1, 1):
        scap.append(("polygon", [(cx + sgn * 0.29 * R, y0 + 0.01 * R), (cx + sgn * 0.43 * R, shoulder),
                                 (cx + sgn * 0.41 * R, y0 + 0.36 * R)], 1.0))
    c.bone += 0.1 * draw(R, scap, blur=1.5) * p.bone_gain


def _vessels(R: int, hila: list[tuple[float, float]], lungs: np.ndarray, w: float,
             rng: np.random.Generator) -> np.ndarray:
    """Branching vessel trees from each hilum, tapering toward the periphery."""
    strokes = []

    def branch(x0, y0, ang, length, width, depth):
        x1, y1 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
        strokes.append(("line", [(x0, y0), (x1, y1)], width, 0.6 + 0.4 * width / 3))
        if depth > 0:
            for d in (-1, 1):
                branch(x1, y1, ang + d * rng.uniform(0.2, 0.55), length * rng.uniform(0.6, 0.8), max(width * 0.7, 1), depth - 1)

    for side, (hx, hy) in enumerate(hila):
        outward = np.pi if side == 0 else 0.0
        for ang in np.linspace(-1.35, 1.35, 7) + rng.uniform(-0.15, 0.15, 7):
            a = outward + (ang if side == 1 else -ang)
            branch(hx, hy, a, w * rng.uniform(0.09, 0.13), 0.012 * R + 1, 3)
    v = draw(R, strokes, blur=0.7)
    hilum = sum(blob(R, hx, hy, 0.035 * R, 0.05 * R, edge=0.03 * R) for hx, hy in hila)
    return (0.09 * v * lungs + 0.18 * hilum).astype(np.float32)


def lateral(p: Patient, R: int, rng: np.random.Generator, frontal_marks: dict) -> Canvas:
    """Left lateral view: anterior to the image's left, spine on the right."""
    c = Canvas(R)
    y, x = c.grid
    x0, y0, w, h = frontal_marks["lung_box"]
    front, back = R * (0.12 - p.ap_depth / 2) + rng.uniform(-0.02, 0.02) * R, R * (0.95 + p.ap_depth / 2)
    mid = (front + back) / 2
    top = R * (p.lung_top - 0.08)
    half = (back - front) / 2 * (0.75 + 0.25 * _smoothstep((y - top) / (0.15 * R)))
    c.soft = 1.4 * np.sqrt(np.clip(1 - ((x - mid) / half) ** 2, 0, 1)).astype(np.float32)
    # raised arms over the upper anterior chest
    arm = draw(R, [("line", [(0, 0.05 * R), (0.42 * R, top + 0.12 * R)], 0.12 * R, 1.0)], blur=0.03 * R)
    c.soft += 0.4 * arm
    c.bone += 0.25 * draw(R, [("line", [(0, 0.1 * R), (0.33 * R, top + 0.14 * R)], 0.035 * R, 1.0)], blur=1.0) * p.bone_gain
    ly0, lh = y0 + 0.02 * R, h
    spine_front = back - 0.27 * R
    lcx, lrx = (front + 0.05 * R + spine_front) / 2, (spine_front - front - 0.05 * R) / 2
    rel = (y - ly0) / lh
    outline = (np.abs(x - lcx) / lrx) ** 2.2 + (np.clip(1 - rel, 0, None)) ** 2.0 < 1.0
    domes = []
    for i, raise_ in enumerate(p.dome_raise):
        apex = ly0 + lh - (0.12 - 0.08 * p.dome_flat) * lh - raise_ * R + i * 0.015 * R
        dome = apex + (0.12 - 0.08 * p.dome_flat) * lh * ((x - lcx + 0.05 * R) / lrx) ** 2
        domes.append(np.minimum(dome, ly0 + lh + 0.04 * R))
    heart_w = R * 0.32 * p.ctr / 0.44
    hcx, hcy = front + 0.06 * R + heart_w / 2, domes[0].min() - 0.06 * R
    heart = blob(R, hcx, hcy, heart_w / 2, 0.14 * R * (0.7 + 0.3 * p.ctr / 0.44), angle=-0.5, edge=3)
    lung = np.zeros((R, R), np.float32)
    for dome in domes:
        lung += 0.5 * (outline & (y < dome))
    lung_s = 0.6 * smooth(lung, 1.0) + 0.4 * smooth(lung, 0.05 * R)
    heart_s = smooth(heart, 0.012 * R)
    c.air = 1.0 * p.lucency * lung_s * (1 - 0.45 * heart_s) * (0.8 + 0.25 * rel.clip(0, 1))
    c.extra += 0.04 * heart_s
    # trachea, hila, sternum, spine, ribs
    c.air += 0.25 * draw(R, [("line", [(lcx - 0.02 * R, top - 0.05 * R), (lcx + 0.02 * R, ly0 + 0.35 * lh)], 0.035 * R, 1.0)], blur=1.5)
    hila = (lcx + 0.03 * R, ly0 + 0.45 * lh)
    c.extra += 0.2 * blob(R, *hila, 0.06 * R, 0.07 * R, edge=0.04 * R)
    c.bone += 0.25 * draw(R, [("line", [(front + 0.02 * R, ly0 + 0.02 * R), (front + 0.05 * R, ly0 + 0.6 * lh)], 0.02 * R, 1.0)], blur=0.8) * p.bone_gain
    c.extra += 0.06 * blob(R, hcx - 0.02 * R, ly0 + 0.25 * lh, 0.05 * R, 0.08 * R, edge=0.03 * R)  # aortic arch
    spine_x = spine_front + 0.05 * R + (0.02 + p.kyphosis) * R * np.sin(np.pi * np.clip((y - top) / (1.1 * lh), 0, 1))
    _spine_lateral(c, p, spine_x, ly0, lh)
    t = ((y - ly0 + 0.4 * (x - lcx)) / lh * 8.0) % 1.0
    c.bone += 0.07 * (t < 0.25) * (x > lcx) * (x < spine_x) * (y > ly0) * (y < domes[1]) * p.bone_gain
    gx = front + 0.12 * R
    c.air += 0.3 * blob(R, gx, domes[1].max() + 0.03 * R, 0.05 * R, 0.025 * R, edge=2) * (y > domes[1].max() + 0.02 * R)
    c.marks.update(lung_top=ly0, lung_h=lh, lung_cx=lcx, lung_rx=lrx, front=front, domes=domes, heart=heart,
                   heart_box=(hcx, hcy, heart_w), spine_x=spine_x, hila=hila, lung=lung > 0, back=back)
    return c


def _spine_lateral(c: Canvas, p: Patient, spine_x: np.ndarray, y0: float, h: float) -> None:
    y, x = c.grid
    R = c.R
    period = h / 10.0
    phase = ((y - y0) / period) % 1.0
    dx = x - spine_x
    inside = (np.abs(dx) < 0.045 * R) & (phase > 0.12) & (phase < 0.92)
    cortex = inside & ((np.abs(dx) > 0.036 * R) | (phase < 0.2) | (phase > 0.84))
    post = np.exp(-((dx - 0.08 * R) / (0.025 * R)) ** 2) * (0.5 + 0.5 * np.cos(2 * np.pi * phase))
    body = smooth((0.3 * inside + 0.15 * cortex).astype(np.float32), 0.7)
    c.bone += (body + 0.1 * post) * p.bone_gain
    c.marks.update(vert_period=period, vert_y0=y0)

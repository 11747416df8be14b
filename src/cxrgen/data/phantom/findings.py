"""Report mentions -> findings drawn in both views.

Each labeler finding maps to one drawing `kind`. Some kinds change the patient before the anatomy
is drawn (cardiomegaly sets the cardiothoracic ratio, hyperinflation flattens the domes); the
others paint into the finished views. Every drawer returns the parameters it used, which go to
truth.json.

Rule for uncertain mentions ("possible nodule"): drawn at half strength, recorded with status -1.
A radiologist hedges when a finding is subtle, so a faint finding keeps image and text consistent.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np

from cxrgen.data.phantom.anatomy import Patient
from cxrgen.data.phantom.canvas import Canvas, blob, draw, noise_field, smooth

# labeler finding -> drawing kind
KIND = {
    "cardiomegaly": "cardiomegaly", "enlarged mediastinum": "enlarged_mediastinum",
    "tortuous aorta": "tortuous_aorta", "aortic atherosclerosis": "aortic_calcification",
    "granuloma": "granuloma", "nodule": "nodule", "mass": "mass", "lung lesion": "mass",
    "emphysema": "hyperinflation", "hyperinflation": "hyperinflation",
    "vascular congestion": "edema", "edema": "edema",
    "consolidation": "consolidation", "pneumonia": "consolidation", "airspace opacity": "opacity",
    "atelectasis": "atelectasis", "scarring": "scarring", "pneumothorax": "pneumothorax",
    "pleural thickening": "pleural_thickening", "pleural effusion": "effusion", "costophrenic blunting": "effusion",
    "hiatal hernia": "hiatal_hernia", "scoliosis": "scoliosis", "kyphosis": "kyphosis",
    "degenerative changes": "degenerative_spine", "elevated hemidiaphragm": "elevated_hemidiaphragm",
    "osteopenia": "osteopenia", "fracture": "rib_fracture", "rib fracture": "rib_fracture",
    "clavicle fracture": "clavicle_fracture", "sternotomy": "sternotomy", "surgical clips": "clips",
    "pacemaker": "pacemaker", "leads": "pacemaker", "monitor leads": "monitor_leads", "catheter": "catheter",
    "tube": "tube", "valve replacement": "valve", "hardware": "hardware", "device": "device",
}
SEVERITY = {"small": 0.65, "mild": 0.75, None: 1.0, "moderate": 1.35, "large": 1.8}
LEVEL = {"apex": 0.1, "upper": 0.25, "middle": 0.5, "retrocardiac": 0.72, "lower": 0.75, "base": 0.85}


@dataclass
class Finding:
    kind: str
    finding: str
    observation: str | None
    status: int
    laterality: str | None
    severity: str | None
    location: str | None
    sentence: str
    strength: float = 1.0

    def to_json(self, params: dict) -> dict:
        return {**asdict(self), "drawn": params}


def from_mentions(mentions) -> tuple[list[Finding], list[dict]]:
    """Positive and uncertain mentions with a drawer, merged per (kind, side, place). Also returns
    the skipped mentions with the reason, for truth.json."""
    out: dict[tuple, Finding] = {}
    skipped = []
    for m in mentions:
        kind = KIND.get(m.finding)
        if m.status == 0:
            continue
        if kind is None:
            skipped.append({"finding": m.finding, "status": m.status, "reason": "no drawer", "sentence": m.sentence})
            continue
        # the labeler counts vascular congestion as uncertain edema, so the truth does too
        status = -1 if m.finding == "vascular congestion" else m.status
        f = Finding(kind, m.finding, m.observation, status, m.laterality, m.severity, m.location, m.sentence,
                    1.0 if status == 1 else 0.5)
        key = (kind, m.laterality, m.location)
        rank = (f.status, f.observation is not None, SEVERITY[f.severity])  # positive, then CheXpert-labelled, then larger
        if key not in out or rank > (out[key].status, out[key].observation is not None, SEVERITY[out[key].severity]):
            out[key] = f
    return list(out.values()), skipped


def observations(f: Finding) -> set[str]:
    """CheXpert observations a drawn finding shows; like the labeler, a "nodular opacity" is a
    lesion and an opacity."""
    obs = {f.observation} if f.observation else set()
    if f.observation == "Lung Lesion" and re.search(r"nodular opacit", f.sentence.lower()):
        obs.add("Lung Opacity")
    return obs


# ---- kinds that change the patient before the anatomy is drawn -------------------------------

def adjust(p: Patient, f: Finding, rng: np.random.Generator) -> Patient:
    s, k = f.strength, SEVERITY[f.severity]
    if f.kind == "cardiomegaly":
        lo = {None: 0.55, "small": 0.53, "mild": 0.53, "moderate": 0.6, "large": 0.65}[f.severity]
        ctr = lo + rng.uniform(0, 0.04)
        return replace(p, ctr=max(p.ctr, p.ctr + (ctr - p.ctr) * s))
    if f.kind == "enlarged_mediastinum":
        return replace(p, mediastinum=p.mediastinum + s * 0.04 * k)
    if f.kind == "hyperinflation":
        return replace(p, dome_flat=max(p.dome_flat, 0.85 * s), lucency=1 + 0.15 * s, inspiration=1.0 + 0.1 * s,
                       ap_depth=0.06 * s, ctr=min(p.ctr, 0.42))
    if f.kind == "scoliosis":
        sign = -1 if "levo" in f.sentence.lower() else 1 if "dextro" in f.sentence.lower() else rng.choice([-1, 1])
        return replace(p, scoliosis=sign * s * 0.04 * k, spine_phase=rng.uniform(-0.3, 0.3))
    if f.kind == "kyphosis":
        return replace(p, kyphosis=0.04 * s * k)
    if f.kind == "osteopenia":
        return replace(p, bone_gain=1 - 0.4 * s)
    if f.kind == "elevated_hemidiaphragm":
        sides = list(p.dome_raise)
        sides[_sides(f, rng)[0]] += 0.1 * s * k  # about two rib interspaces
        return replace(p, dome_raise=tuple(sides))
    if f.kind == "tortuous_aorta":
        return replace(p, knob=p.knob + 0.025 * s * k)
    return p


ADJUSTERS = {"cardiomegaly", "enlarged_mediastinum", "hyperinflation", "scoliosis", "kyphosis", "osteopenia",
             "elevated_hemidiaphragm", "tortuous_aorta"}


# ---- helpers ---------------------------------------------------------------------------------

def _sides(f: Finding, rng: np.random.Generator, plural_both: bool = False) -> list[int]:
    """Frontal lung indices: 0 = image left = patient's right; 1 = patient's left."""
    if f.laterality == "right":
        return [0]
    if f.laterality == "left":
        return [1]
    if f.laterality == "bilateral" or (plural_both and f.finding + "s" in f.sentence.lower()):
        return [0, 1]
    return [int(rng.integers(2))]


def _level(f: Finding, rng: np.random.Generator, default: tuple[str, ...] = ("middle", "lower")) -> float:
    loc = f.location if f.location in LEVEL else str(rng.choice(default))
    return LEVEL[loc] + rng.uniform(-0.06, 0.06)


def _point(c: Canvas, side: int, level: float, rng: np.random.Generator, medial: bool = False) -> tuple[float, float]:
    """A point inside lung `side` of the frontal view at fractional height `level`."""
    lung = c.marks["lungs"][side]
    rows = np.nonzero(lung.any(1))[0]
    y = int(rows.min() + np.clip(level, 0.03, 0.95) * (rows.max() - rows.min()))
    xs = np.nonzero(lung[y])[0]
    if xs.size == 0:
        xs = np.nonzero(lung.any(0))[0]
    lo, hi = (0.05, 0.35) if medial == (side == 1) else (0.65, 0.95)
    lo, hi = (0.25, 0.75) if not medial else (lo, hi)
    return float(xs.min() + rng.uniform(lo, hi) * (xs.max() - xs.min())), float(y)


def _lat_point(c: Canvas, level: float, place: str | None, rng: np.random.Generator) -> tuple[float, float]:
    """The same finding in the lateral view: height from `level`, front-back from the place."""
    m = c.marks
    y = m["lung_top"] + np.clip(level, 0.05, 0.9) * m["lung_h"]
    ap = {"middle": -0.45, "retrocardiac": 0.45, "lower": 0.35, "base": 0.4}.get(place, rng.uniform(-0.3, 0.5))
    return float(m["lung_cx"] + ap * m["lung_rx"] + rng.uniform(-0.1, 0.1) * m["lung_rx"]), float(y)


def _replace_air(c: Canvas, shape: np.ndarray, amount: float, lung: np.ndarray | None = None, dense: float = 0.1) -> None:
    """Tissue or fluid replacing lung air inside `shape`: brighter, and vessels beneath are hidden."""
    shape = shape * (lung if lung is not None else 1.0)
    c.fill = np.maximum(c.fill, amount * shape)
    c.extra += dense * amount * shape


# ---- drawers: each returns the parameters it used --------------------------------------------

def _opacity(F: Canvas, L: Canvas, f: Finding, rng, density: float) -> dict:
    sides, level = _sides(f, rng), _level(f, rng)
    k, R = SEVERITY[f.severity], F.R
    out = []
    for side in sides:
        x, y = _point(F, side, level, rng, medial=f.location == "retrocardiac")
        r = R * 0.08 * k
        patch = blob(R, x, y, r, r * 0.8, edge=r * 0.8) * np.clip(0.6 + 0.5 * noise_field(rng, R, 0.025 * R), 0, 1)
        _replace_air(F, patch, density * f.strength, F.marks["lung_any"])
        out.append({"side": ["right", "left"][side], "x": x / R, "y": y / R, "radius": r / R})
    lx, ly = _lat_point(L, level, f.location, rng)
    r = R * 0.06 * k
    patch = blob(R, lx, ly, r, r * 0.8, edge=r * 0.8) * np.clip(0.6 + 0.5 * noise_field(rng, R, 0.025 * R), 0, 1)
    _replace_air(L, patch, density * f.strength, L.marks["lung"])
    return {"patches": out, "level": level}


def opacity(F, L, f, rng):
    return _opacity(F, L, f, rng, 0.8)


def consolidation(F, L, f, rng):
    return _opacity(F, L, f, rng, 0.95)


def atelectasis(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, level = F.R, _level(f, rng, ("lower", "base"))
    strokes, lat = [], []
    for side in _sides(f, rng):
        for _ in range(int(rng.integers(1, 3))):
            x, y = _point(F, side, level + rng.uniform(-0.05, 0.05), rng)
            dx, dy = R * rng.uniform(0.05, 0.09), R * rng.uniform(-0.015, 0.015)
            strokes.append(("line", [(x - dx, y - dy), (x + dx, y + dy)], R * 0.014 * SEVERITY[f.severity], 1.0))
    _replace_air(F, draw(R, strokes, blur=0.8), 0.9 * f.strength, F.marks["lung_any"], dense=0.15)
    lx, ly = _lat_point(L, level, f.location, rng)
    lat.append(("line", [(lx - 0.08 * R, ly - 0.01 * R), (lx + 0.08 * R, ly + 0.01 * R)], R * 0.014, 1.0))
    _replace_air(L, draw(R, lat, blur=0.8), 0.8 * f.strength, L.marks["lung"], dense=0.15)
    return {"bands": len(strokes), "level": level}


def _strands(x0: float, y0: float, hilum: tuple[float, float], n: int, R: int, rng) -> list[tuple]:
    """Fibrotic strands around (x0, y0), each pointing roughly toward the hilum that scars retract to."""
    out = []
    for _ in range(n):
        x, y = x0 + rng.normal(0, 0.035) * R, y0 + rng.normal(0, 0.03) * R
        a, ln, bend = np.arctan2(hilum[1] - y, hilum[0] - x) + rng.normal(0, 0.45), R * rng.uniform(0.04, 0.09), rng.normal(0, 0.4)
        mid = (x + ln / 2 * np.cos(a + bend / 2), y + ln / 2 * np.sin(a + bend / 2))  # slightly bent, like a real strand
        out.append(("line", [(x, y), mid, (mid[0] + ln / 2 * np.cos(a - bend / 2), mid[1] + ln / 2 * np.sin(a - bend / 2))],
                    max(1.5, R * 0.008), 1.0))
    return out


def scarring(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Coarse linear strands in the stated zone (apical by default), converging on the hilum."""
    R, level = F.R, _level(f, rng, ("apex", "upper"))
    sides = _sides(f, rng)
    strokes = []
    for side in sides:
        strokes += _strands(*_point(F, side, level, rng), F.marks["hila"][side], 14, R, rng)
    _replace_air(F, draw(R, strokes, blur=0.9), 0.6 * f.strength, F.marks["lung_any"], dense=0.1)
    lat = _strands(*_lat_point(L, level, f.location, rng), L.marks["hila"], 9, R, rng)
    _replace_air(L, draw(R, lat, blur=0.9), 0.5 * f.strength, L.marks["lung"], dense=0.1)
    return {"sides": [["right", "left"][s] for s in sides], "level": level, "strands_per_side": 14}


def effusion(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Fluid in the dependent pleural space: a meniscus rising laterally, blunting the angle."""
    k = SEVERITY[f.severity] * (0.6 if f.finding == "costophrenic blunting" else 1.0)
    y, x = F.grid
    sides, heights = _sides(f, rng, plural_both=True), []
    for side in sides:
        lung = F.marks["lungs"][side]
        rows, cols = np.nonzero(lung.any(1))[0], np.nonzero(lung.any(0))[0]
        bottom, lh = rows.max(), rows.max() - rows.min()
        lat_x, med_x = (cols.min(), cols.max()) if side == 0 else (cols.max(), cols.min())
        u = np.clip((x - med_x) / (lat_x - med_x), 0, 1)  # 0 medial .. 1 lateral
        hgt = lh * 0.11 * k
        level = bottom - hgt * (0.3 + 0.9 * u ** 2)
        fluid = np.clip((y - level) / 2.0, 0, 1) * lung
        _replace_air(F, fluid, f.strength, dense=0.15)
        heights.append(float(hgt / lh))
    # lateral: posterior costophrenic sulcus fills first
    m = L.marks
    yl, xl = L.grid
    post = np.clip((xl - m["lung_cx"]) / m["lung_rx"], -1, 1)
    bottom = np.maximum(*m["domes"])
    level = bottom - m["lung_h"] * 0.1 * k * (0.4 + 0.8 * np.clip(post + 0.3, 0, None) ** 2)
    _replace_air(L, np.clip((yl - level) / 2.0, 0, 1) * m["lung"], 0.5 * f.strength * len(sides), dense=0.15)
    return {"sides": [["right", "left"][s] for s in sides], "meniscus_height": heights}


def pneumothorax(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Air between chest wall and a collapsed lung: a thin visceral pleural line, no markings beyond."""
    from scipy import ndimage
    R, k = F.R, SEVERITY[f.severity]
    y, x = F.grid
    sides, widths = _sides(f, rng), []
    for side in sides:
        lung = F.marks["lungs"][side]
        rows, cols = np.nonzero(lung.any(1))[0], np.nonzero(lung.any(0))[0]
        # distance from the chest wall only: the medial (mediastinal) border stays put
        wall = lung | ((x > cols.mean()) if side == 0 else (x < cols.mean()))
        dist = ndimage.distance_transform_edt(wall) * lung
        rel = np.clip((y - rows.min()) / (rows.max() - rows.min()), 0, 1)
        d = R * 0.045 * k * (1.2 - 0.9 * rel)  # widest at the apex
        space = (dist > 0) & (dist < d)
        line = np.exp(-((dist - d) / 0.9) ** 2) * lung * (rel < 0.8)
        F.extra -= F.extra * space * (rel < 0.85) * 0.8  # no vessels beyond the pleural line
        F.air += 0.25 * f.strength * space * (rel < 0.85)
        F.extra += 0.25 * f.strength * line
        widths.append(float(0.045 * k * 1.1))
    m = L.marks
    ly = m["lung_top"] + 0.12 * m["lung_h"]
    arc = draw(R, [("arc", (m["lung_cx"] - 0.6 * m["lung_rx"], m["lung_top"] + 0.04 * R, m["lung_cx"] + 0.6 * m["lung_rx"],
                            ly + 0.15 * R), 190, 350, 1.5, 1.0)], blur=0.5)
    L.extra += 0.2 * f.strength * arc
    return {"sides": [["right", "left"][s] for s in sides], "apical_width": widths}


def edema(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, s = F.R, f.strength * (0.6 if f.finding == "vascular congestion" else 1.0)
    haze = sum(blob(R, hx, hy, 0.13 * R, 0.16 * R, edge=0.12 * R) for hx, hy in F.marks["hila"])
    _replace_air(F, np.clip(haze, 0, 1), 0.55 * s, F.marks["lung_any"], dense=0.1)
    lines = []
    for side in (0, 1):
        for _ in range(6):
            x, y = _point(F, side, rng.uniform(0.7, 0.92), rng)
            lung = F.marks["lungs"][side]
            xs = np.nonzero(lung[int(y)])[0]
            if xs.size == 0:  # the row is all heart
                continue
            x0 = xs.min() if side == 0 else xs.max()
            sgn = 1 if side == 0 else -1
            lines.append(("line", [(x0, y), (x0 + sgn * 0.035 * R, y)], 1.5, 1.0))
    _replace_air(F, draw(R, lines, blur=0.4), 0.8 * s, F.marks["lung_any"], dense=0.12)
    m = L.marks
    _replace_air(L, blob(R, *m["hila"], 0.14 * R, 0.16 * R, edge=0.1 * R), 0.45 * s, m["lung"])
    return {"septal_lines": len(lines)}


def _round(F: Canvas, L: Canvas, f: Finding, rng, radius: float, density: float, calcified: bool, count: int) -> dict:
    R = F.R
    spots = []
    for _ in range(count):
        side, level = _sides(f, rng)[0], _level(f, rng, ("upper", "middle", "lower"))
        x, y = _point(F, side, level, rng)
        r = R * radius * rng.uniform(0.8, 1.25)
        shape = blob(R, x, y, r, r * rng.uniform(0.85, 1.0), edge=0.6 if calcified else r * 0.3)
        if calcified:
            F.extra += density * f.strength * shape
        else:
            _replace_air(F, shape, f.strength, F.marks["lung_any"], dense=density)
        lx, ly = _lat_point(L, level, f.location, rng)
        lshape = blob(R, lx, ly, r, r, edge=0.6 if calcified else r * 0.3)
        L.extra += (density if calcified else density + 0.15) * f.strength * lshape * 0.8
        spots.append({"side": ["right", "left"][side], "x": x / R, "y": y / R, "radius": r / R})
    return {"spots": spots, "calcified": calcified}


def granuloma(F, L, f, rng):
    plural = any(w in f.sentence.lower() for w in ("granulomas", "nodes", "densities", "nodules"))
    return _round(F, L, f, rng, 0.011, 0.9, True, int(rng.integers(2, 5)) if plural else 1)


def nodule(F, L, f, rng):
    return _round(F, L, f, rng, 0.022, 0.25, False, 2 if "nodules" in f.sentence.lower() else 1)


def mass(F, L, f, rng):
    return _round(F, L, f, rng, 0.06 * SEVERITY[f.severity], 0.3, False, 1)


def rib_fracture(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Healed posterior rib fractures: a gap across the rib inside a bulky callus, on the ribs the
    sentence numbers ("left 5th and 6th rib"), else 1 rib, or 2-3 adjacent ones for "fractures"."""
    R = F.R
    sent = f.sentence.lower()
    stated = sorted({int(n) - 1 for n in re.findall(r"\b(\d{1,2})(?:st|nd|rd|th)\b", sent) if 1 <= int(n) <= 10})
    plural = "fractures" in sent or "deformities" in sent
    t, u = F.marks["rib_t"], F.marks["rib_u"]
    y, x = F.grid
    m = L.marks
    breaks = []
    for side in _sides(f, rng):
        rib0 = int(rng.integers(2, 5) if f.location in ("upper", "apex") else rng.integers(5, 8) if f.location in ("lower", "base")
                   else rng.integers(3, 7))
        ribs = stated or range(rib0, rib0 + (int(rng.integers(2, 4)) if plural else 1))
        u0 = rng.uniform(0.55, 0.85)
        this_side = (x < F.marks["spine_x"]) if side == 0 else (x > F.marks["spine_x"])
        for rib in ribs:
            ur = u0 + rng.uniform(-0.04, 0.04)
            gap = (np.floor(t) == rib) & ((t % 1.0) < 0.42) & this_side & (np.abs(u - ur) < 0.012)
            ys, xs = np.nonzero(gap)
            if not ys.size:
                continue
            # fusiform callus around a thin lucent fracture line: what makes an old fracture visible at low resolution
            F.bone += 0.4 * f.strength * blob(R, xs.mean(), ys.mean(), 0.045 * R, 0.028 * R, edge=0.015 * R)
            F.bone -= 0.2 * f.strength * smooth(gap.astype(np.float32), 0.5)
            lx, ly = m["lung_cx"] + 0.55 * m["lung_rx"], m["lung_top"] + (rib / 10) * m["lung_h"]
            L.bone += 0.35 * f.strength * blob(R, lx, ly, 0.028 * R, 0.011 * R, angle=-0.4, edge=0.008 * R)
            breaks.append({"side": ["right", "left"][side], "rib": rib + 1, "lateral_position": round(float(ur), 3)})
    return {"breaks": breaks}


def clavicle_fracture(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, side = F.R, _sides(f, rng)[0]
    cx, y0 = F.marks["cx"], F.marks["lung_box"][1]
    gx = cx + (-1 if side == 0 else 1) * 0.2 * R
    F.bone -= 0.3 * f.strength * draw(R, [("line", [(gx - 2, y0 - 0.04 * R), (gx + 2, y0 + 0.04 * R)], 3, 1.0)], blur=0.5)
    return {"side": ["right", "left"][side]}


def pacemaker(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    side = 1 if f.laterality != "right" else 0
    cx, (_, y0, _, h) = F.marks["cx"], F.marks["lung_box"]
    sgn = -1 if side == 0 else 1
    gx, gy = cx + sgn * rng.uniform(0.2, 0.28) * R, y0 + rng.uniform(0.0, 0.06) * R
    hx0, hx1 = F.marks["heart_x"]
    hy = F.marks["heart_cy"]
    gen = [("rect", (gx - 0.045 * R, gy - 0.03 * R, gx + 0.045 * R, gy + 0.03 * R), 1.0)]
    lead = [(gx, gy), (cx + sgn * 0.1 * R, y0 - 0.01 * R), (cx - 0.03 * R, y0 + 0.2 * h), (cx - 0.04 * R, hy - 0.02 * R),
            (hx1 - 0.25 * (hx1 - hx0), hy + 0.08 * R)]
    leads = [("line", lead, 0.009 * R, 0.7)]
    if "icd" in f.sentence.lower() or "defib" in f.sentence.lower():
        leads.append(("line", [(p[0] + 3, p[1]) for p in lead[:-1]] + [(cx + 0.02 * R, hy - 0.08 * R)], 0.012 * R, 0.8))
    F.metal += 1.6 * f.strength * draw(R, gen, blur=1.0) + 1.1 * f.strength * draw(R, leads, blur=0.5)
    m = L.marks
    lgx, lgy = m["front"] + 0.06 * R, m["lung_top"] + 0.03 * R
    hcx, hcy, hw = m["heart_box"]
    L.metal += 1.4 * f.strength * draw(R, [("rect", (lgx - 0.02 * R, lgy - 0.03 * R, lgx + 0.02 * R, lgy + 0.03 * R), 1.0)], blur=1.0)
    L.metal += 1.0 * f.strength * draw(R, [("line", [(lgx, lgy), (hcx, m["lung_top"] + 0.2 * m["lung_h"]), (hcx - 0.2 * hw, hcy + 0.05 * R)], 0.009 * R, 0.7)], blur=0.5)
    return {"side": ["right", "left"][side], "generator": (gx / R, gy / R), "leads": len(leads)}


def sternotomy(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, n = F.R, int(rng.integers(5, 8))
    cx, (_, y0, _, h) = F.marks["cx"], F.marks["lung_box"]
    ys = np.linspace(y0 + 0.08 * h, y0 + 0.6 * h, n)
    loops = [("arc", (cx - 0.018 * R, yy - 0.01 * R, cx + 0.018 * R, yy + 0.01 * R), 0, 360, 2, 1.0) for yy in ys]
    F.metal += 1.3 * f.strength * draw(R, loops, blur=0.5)
    m = L.marks
    lys = np.linspace(m["lung_top"] + 0.05 * R, m["lung_top"] + 0.55 * m["lung_h"], n)
    fx = m["front"] + 0.035 * R
    L.metal += 1.2 * f.strength * draw(R, [("arc", (fx - 0.01 * R, yy - 0.008 * R, fx + 0.01 * R, yy + 0.008 * R), 0, 360, 2, 1.0) for yy in lys], blur=0.5)
    return {"wires": n}


def clips(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, sent = F.R, f.sentence.lower()
    cx, (_, y0, _, h) = F.marks["cx"], F.marks["lung_box"]
    if "cholecyst" in sent or "abdomen" in sent or "quadrant" in sent:
        where, (px, py) = "right upper quadrant", (cx - 0.18 * R, F.marks["dome_y"] + 0.08 * R)
    elif "axilla" in sent or f.laterality:
        side = 1 if f.laterality == "left" else 0
        where, (px, py) = "axilla", (cx + (-1 if side == 0 else 1) * 0.3 * R, y0 + 0.15 * h)
    else:
        where, (px, py) = "mediastinum", (cx + 0.03 * R, y0 + 0.45 * h)
    n = int(rng.integers(3, 7))
    strokes = []
    for _ in range(n):
        x, y, a = px + rng.normal(0, 0.035) * R, py + rng.normal(0, 0.035) * R, rng.uniform(0, np.pi)
        ln = 0.014 * R
        strokes.append(("line", [(x, y), (x + ln * np.cos(a), y + ln * np.sin(a))], 2, 1.0))
    F.metal += 1.4 * f.strength * draw(R, strokes, blur=0.4)
    m = L.marks
    lx = m["front"] + 0.08 * R if where != "axilla" else m["lung_cx"]
    ly = (py - y0) / h * m["lung_h"] + m["lung_top"]
    L.metal += 1.2 * f.strength * draw(R, [("line", [(lx + dx, ly + dy), (lx + dx + 3, ly + dy + 2)], 2, 1.0)
                                          for dx, dy in rng.normal(0, 0.03 * R, (n, 2))], blur=0.4)
    return {"where": where, "clips": n}


def catheter(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    cx, (_, y0, _, h), sh = F.marks["cx"], F.marks["lung_box"], F.marks["shoulder"]
    side = 1 if f.laterality == "left" else 0
    sgn = -1 if side == 0 else 1
    path = [(cx + sgn * 0.38 * R, sh + 0.04 * R), (cx + sgn * 0.12 * R, y0 - 0.005 * R), (cx - 0.035 * R, y0 + 0.12 * h),
            (cx - 0.03 * R, y0 + 0.38 * h)]
    strokes = [("line", path, 0.008 * R, 1.0)]
    port = any(w_ in f.sentence.lower() for w_ in ("port", "mediport"))
    if port:
        strokes.append(("ellipse", (path[1][0] - 0.025 * R, path[1][1] + 0.02 * R, path[1][0] + 0.025 * R, path[1][1] + 0.07 * R), 1.0))
    F.metal += 0.8 * f.strength * draw(R, strokes, blur=0.5)
    m = L.marks
    L.metal += 0.7 * f.strength * draw(R, [("line", [(m["lung_cx"], m["lung_top"] - 0.1 * R), (m["lung_cx"] - 0.05 * R, m["lung_top"] + 0.4 * m["lung_h"])], 0.008 * R, 1.0)], blur=0.5)
    return {"side": ["right", "left"][side], "port": port}


def tube(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    cx, (_, y0, _, h) = F.marks["cx"], F.marks["lung_box"]
    sent = f.sentence.lower()
    if any(w_ in sent for w_ in ("gastric", "ng ", "nasogastric", "feeding", "enteric", "og ")):
        path, which = [(cx - 0.01 * R, 0), (cx + 0.01 * R, y0 + 0.6 * h), (cx + 0.15 * R, F.marks["dome_y"] + 0.08 * R)], "enteric"
    elif "chest tube" in sent:
        side = 1 if f.laterality == "left" else 0
        sx = cx + (-1 if side == 0 else 1) * 0.3 * R
        path, which = [(sx, y0 + 0.9 * h), (sx + (1 if side == 0 else -1) * 0.05 * R, y0 + 0.2 * h)], "chest"
    else:
        path, which = [(cx, 0), (cx, y0 + 0.12 * h)], "endotracheal"
    F.metal += 0.7 * f.strength * draw(R, [("line", path, 0.012 * R, 1.0)], blur=0.5)
    m = L.marks
    L.metal += 0.6 * f.strength * draw(R, [("line", [(m["lung_cx"] - 0.02 * R, 0), (m["lung_cx"], m["lung_top"] + 0.3 * m["lung_h"])], 0.012 * R, 1.0)], blur=0.5)
    return {"tube": which}


def monitor_leads(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    pts = [(F.marks["cx"] + dx * R, F.marks["lung_box"][1] + dy * R) for dx, dy in rng.uniform([-0.3, 0.0], [0.3, 0.5], (3, 2))]
    strokes = [("arc", (x - 0.015 * R, y - 0.015 * R, x + 0.015 * R, y + 0.015 * R), 0, 360, 2, 1.0) for x, y in pts]
    strokes += [("line", [(x, y), (x + rng.uniform(-0.2, 0.2) * R, R)], 1, 0.6) for x, y in pts]
    F.metal += 0.9 * f.strength * draw(R, strokes, blur=0.4)
    m = L.marks
    L.metal += 0.8 * f.strength * draw(R, [("arc", (m["front"] - 3, m["lung_top"] + dy * R, m["front"] + 3, m["lung_top"] + dy * R + 6), 0, 360, 2, 1.0) for dy in (0.1, 0.3)], blur=0.4)
    return {"electrodes": len(pts)}


def valve(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    hx0, hx1 = F.marks["heart_x"]
    x, y = (hx0 + hx1) / 2 - 0.02 * R, F.marks["heart_cy"] - 0.03 * R
    F.metal += 1.2 * f.strength * draw(R, [("arc", (x - 0.025 * R, y - 0.02 * R, x + 0.025 * R, y + 0.02 * R), 0, 360, 3, 1.0)], blur=0.4)
    hcx, hcy, hw = L.marks["heart_box"]
    L.metal += 1.2 * f.strength * draw(R, [("arc", (hcx - 0.02 * R, hcy - 0.04 * R, hcx + 0.02 * R, hcy), 0, 360, 3, 1.0)], blur=0.4)
    return {"position": (x / R, y / R)}


def device(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Other implanted material over the heart: CABG graft markers (rings) or a closure device/recorder."""
    R = F.R
    hx0, hx1 = F.marks["heart_x"]
    hcy = F.marks["heart_cy"]
    hcx, lcy, hw = L.marks["heart_box"]
    if "marker" in f.sentence.lower():
        pts = [((hx0 + hx1) / 2 + dx * R, hcy + dy * R) for dx, dy in rng.uniform(-0.06, 0.06, (3, 2))]
        strokes = [("arc", (x - 0.012 * R, y - 0.012 * R, x + 0.012 * R, y + 0.012 * R), 0, 360, 2, 1.0) for x, y in pts]
        lat = [("arc", (hcx + dx * R - 0.01 * R, lcy + dy * R - 0.01 * R, hcx + dx * R + 0.01 * R, lcy + dy * R + 0.01 * R), 0, 360, 2, 1.0)
               for dx, dy in rng.uniform(-0.05, 0.05, (3, 2))]
        what = "graft markers"
    else:
        x, y = (hx0 + hx1) / 2, hcy - 0.04 * R
        strokes = [("rect", (x - 0.015 * R, y - 0.01 * R, x + 0.015 * R, y + 0.01 * R), 1.0)]
        lat = [("rect", (hcx - 0.012 * R, lcy - 0.01 * R, hcx + 0.012 * R, lcy + 0.01 * R), 1.0)]
        what = "device"
    F.metal += 1.2 * f.strength * draw(R, strokes, blur=0.4)
    L.metal += 1.2 * f.strength * draw(R, lat, blur=0.4)
    return {"what": what}


def hardware(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R, y0 = F.R, F.marks["lung_box"][1]
    sx = float(F.marks["spine_x"][int(y0 + 0.6 * F.marks["lung_box"][3]), 0])
    ya, yb = y0 + 0.4 * F.marks["lung_box"][3], y0 + 0.95 * F.marks["lung_box"][3]
    F.metal += 1.3 * f.strength * draw(R, [("line", [(sx + d, ya), (sx + d, yb)], 3, 1.0) for d in (-0.03 * R, 0.03 * R)], blur=0.4)
    m = L.marks
    lx = float(m["spine_x"][int(m["lung_top"] + 0.6 * m["lung_h"]), 0]) + 0.06 * R
    L.metal += 1.3 * f.strength * draw(R, [("line", [(lx, m["lung_top"] + 0.4 * m["lung_h"]), (lx, m["lung_top"] + 0.95 * m["lung_h"])], 3, 1.0)], blur=0.4)
    return {"levels": "thoracolumbar"}


def hiatal_hernia(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """A retrocardiac round density with an air-fluid level."""
    R, k = F.R, SEVERITY[f.severity]
    y, x = F.grid
    r = R * 0.055 * k
    hx = F.marks["cx"] + 0.02 * R
    hy = F.marks["dome_y"] - r * 0.7
    sac = blob(R, hx, hy, r * 1.15, r, edge=1.5)
    level = hy - r * 0.15
    F.extra += 0.12 * f.strength * sac * (y >= level)
    F.air += 0.45 * f.strength * sac * (y < level)
    F.extra += 0.2 * f.strength * np.exp(-((y - level) / 0.8) ** 2) * sac
    m = L.marks
    hcx, hcy, hw = m["heart_box"]
    lx, ly = hcx + 0.5 * hw + r, np.min(m["domes"][0]) - r * 0.5
    sac = blob(R, lx, ly, r, r, edge=1.5)
    L.extra += 0.15 * f.strength * sac * (y >= ly - 0.15 * r)
    L.air += 0.4 * f.strength * sac * (y < ly - 0.15 * r)
    return {"radius": r / R, "center": (hx / R, hy / R)}


def degenerative_spine(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """Marginal osteophytes and endplate sclerosis, most visible on the lateral."""
    R = F.R
    strokes_f, strokes_l = [], []
    period, y0 = F.marks["vertebra_period"], F.marks["lung_box"][1]
    levels = sorted(rng.choice(np.arange(3, 11), size=int(rng.integers(4, 7)), replace=False))
    for lv in levels:
        yy = y0 + lv * period
        sx = float(F.marks["spine_x"][int(min(yy, R - 1)), 0])
        for sgn in (-1, 1):
            bx = sx + sgn * 0.038 * R
            strokes_f.append(("polygon", [(bx, yy - 0.018 * R), (bx + sgn * 0.03 * R, yy), (bx, yy + 0.018 * R)], 1.0))
        m = L.marks
        ly = m["vert_y0"] + lv * m["vert_period"]
        lx = float(m["spine_x"][int(min(ly, R - 1)), 0]) - 0.045 * R
        strokes_l.append(("polygon", [(lx + 2, ly - 0.03 * R), (lx - 0.032 * R, ly - 0.004 * R), (lx + 2, ly - 0.002 * R)], 1.0))
        strokes_l.append(("polygon", [(lx + 2, ly + 0.03 * R), (lx - 0.032 * R, ly + 0.004 * R), (lx + 2, ly + 0.002 * R)], 1.0))
        strokes_l.append(("line", [(lx, ly), (lx + 0.09 * R, ly)], 3, 1.0))
    F.bone += 0.45 * f.strength * draw(R, strokes_f, blur=0.6)
    L.bone += 0.7 * f.strength * draw(R, strokes_l, blur=0.6)
    return {"levels": [int(v) for v in levels]}


def aortic_calcification(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    R = F.R
    kx, ky = F.marks["knob"]
    r = 0.04 * R
    F.extra += 0.6 * f.strength * draw(R, [("arc", (kx - r, ky - r, kx + r, ky + r), 200, 340, 2, 1.0)], blur=0.4)
    hcx, hcy, hw = L.marks["heart_box"]
    ay = L.marks["lung_top"] + 0.25 * L.marks["lung_h"]
    L.extra += 0.5 * f.strength * draw(R, [("arc", (hcx - 0.05 * R, ay - 0.06 * R, hcx + 0.07 * R, ay + 0.06 * R), 190, 330, 2, 1.0)], blur=0.4)
    return {"knob": (kx / R, ky / R)}


def tortuous_aorta(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    """An unfolded aorta: a large knob and a descending aorta that bows to the patient's left of the
    spine (frontal); a wide arch and a descending aorta behind the heart (lateral)."""
    R, k = F.R, SEVERITY[f.severity]
    kx, ky = F.marks["knob"]
    y1 = F.marks["heart_cy"] + 0.08 * R
    bow = rng.uniform(0.05, 0.07) * R * k
    path = [(kx, ky), (kx + 0.6 * bow, ky + 0.3 * (y1 - ky)), (kx + bow, ky + 0.6 * (y1 - ky)), (F.marks["cx"] + 0.07 * R, y1)]
    aorta = draw(R, [("line", path, 0.055 * R, 1.0)], blur=0.02 * R)  # a soft contour, not a tube
    _replace_air(F, aorta, 0.8 * f.strength, F.marks["lung_any"], dense=0.1)
    m = L.marks
    hcx = m["heart_box"][0]
    top, sx = m["lung_top"] + 0.12 * m["lung_h"], float(m["spine_x"][int(m["lung_top"] + 0.7 * m["lung_h"]), 0])
    lat = [("line", [(hcx - 0.03 * R, m["lung_top"] + 0.4 * m["lung_h"]), (hcx, top), (hcx + 0.12 * R, top - 0.01 * R),
                     (sx - 0.07 * R, m["lung_top"] + 0.35 * m["lung_h"]), (sx - 0.06 * R, m["lung_top"] + 0.85 * m["lung_h"])], 0.05 * R, 1.0)]
    _replace_air(L, draw(R, lat, blur=0.02 * R), 0.45 * f.strength, m["lung"], dense=0.06)
    return {"path": [(round(px / R, 3), round(py / R, 3)) for px, py in path]}


def pleural_thickening(F: Canvas, L: Canvas, f: Finding, rng) -> dict:
    from scipy import ndimage
    R = F.R
    y, _ = F.grid
    sides = _sides(f, rng, plural_both=True)
    for side in sides:
        lung = F.marks["lungs"][side]
        rows = np.nonzero(lung.any(1))[0]
        rim = lung & ~ndimage.binary_erosion(lung, iterations=max(2, int(0.012 * R)))
        apex = rim & (y < rows.min() + 0.2 * (rows.max() - rows.min()))
        _replace_air(F, smooth(apex.astype(np.float32), 0.7), f.strength, dense=0.15)
    m = L.marks
    _replace_air(L, blob(R, m["lung_cx"], m["lung_top"] + 0.03 * R, 0.5 * m["lung_rx"], 0.02 * R, edge=2), 0.7 * f.strength, m["lung"])
    return {"sides": [["right", "left"][s] for s in sides], "where": "apical"}


def _spine_only(F, L, f, rng) -> dict:
    """Scoliosis, kyphosis, osteopenia, hyperinflation ... are drawn through the patient parameters."""
    return {}


DRAWERS = {
    "opacity": opacity, "consolidation": consolidation, "atelectasis": atelectasis, "scarring": scarring,
    "effusion": effusion, "pneumothorax": pneumothorax, "edema": edema, "granuloma": granuloma,
    "nodule": nodule, "mass": mass, "rib_fracture": rib_fracture, "clavicle_fracture": clavicle_fracture,
    "pacemaker": pacemaker, "sternotomy": sternotomy, "clips": clips, "catheter": catheter, "tube": tube,
    "monitor_leads": monitor_leads, "valve": valve, "hardware": hardware, "hiatal_hernia": hiatal_hernia,
    "degenerative_spine": degenerative_spine, "aortic_calcification": aortic_calcification,
    "tortuous_aorta": tortuous_aorta, "pleural_thickening": pleural_thickening, "device": device,
    **{k: _spine_only for k in ADJUSTERS if k != "tortuous_aorta"},
}
assert set(KIND.values()) <= set(DRAWERS), set(KIND.values()) - set(DRAWERS)

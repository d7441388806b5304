"""Label maps -> polygons: each connected region of a class traced along its pixel edges, holes included, then simplified.

Coordinates are those of :mod:`fcnseg.annotations.raster` (the origin at the top-left corner of the
top-left pixel; pixel (r, c) is the square [c, c+1) x [r, r+1)). A region is 4-connected: two pixels of
a class that touch only at a corner are two regions, and the background between them one hole.
A region's boundary is traced along its pixel edges, then written through the midpoints of those
edges: a staircase becomes the straight line it steps along (a 45-degree edge is one segment), and
no pixel centre lies on the ring, so an unsimplified ring filled at pixel centres gives back exactly
the region's pixels (its corners are cut by half a pixel edge, which holds no centre).
Simplification (Douglas-Peucker, ``tolerance`` in pixels) keeps a subset of those vertices; it never
removes a ring: a ring it would flatten to nothing is kept as traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEFAULT_TOLERANCE = 0.5  # pixels: the largest distance of a dropped vertex from the simplified outline
DEFAULT_MIN_AREA = 4  # pixels: smaller regions (and holes) are left out of polygon outputs

# Edge directions along a ring, the region on the right (y points down): 0 +x, 1 +y, 2 -x, 3 -y.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


@dataclass(frozen=True)
class Outline:
    """One 4-connected region of a class.

    Attributes:
        label: its class index.
        outer: float64 ``[N, 2]`` ``(x, y)`` vertices of its boundary (clockwise on screen, positive
            :func:`ring_area`), not repeating the first at the end; multiples of 0.5 before simplification.
        holes: one such ring per hole kept (counter-clockwise on screen, negative area).
        pixels: how many pixels the region holds.
    """

    label: int
    outer: np.ndarray
    holes: tuple[np.ndarray, ...]
    pixels: int


def ring_area(ring: np.ndarray) -> float:
    """Signed area of a ring ``[N, 2]`` (shoelace), positive when clockwise on screen (y down)."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.dot(x[:-1], y[1:]) + x[-1] * y[0] - np.dot(x[1:], y[:-1]) - x[0] * y[-1]) / 2


def trace_rings(mask: np.ndarray) -> tuple[list[np.ndarray], list[tuple[int, int]], list[float]]:
    """The boundary rings of ``mask`` (bool ``[H, W]``) along pixel edges, and for each a pixel of its region.

    Where two pixels of the mask touch only at a corner the ring turns so as to keep them apart
    (4-connectivity). Only the corners of a ring are kept (no vertex in the middle of a straight run).

    Returns:
        ``(rings, pixels, areas)``: int64 ``[N, 2]`` ``(x, y)`` rings; the ``(row, column)`` of a mask pixel
        on the right of each ring's first edge (so inside the region the ring bounds); each ring's
        :func:`ring_area` (the pixels it holds, negative for a hole).
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    # a mask pixel (r, c) has an edge on each side whose neighbour is not in the mask:
    # top (c, r)->(c+1, r), right (c+1, r)->(c+1, r+1), bottom (c+1, r+1)->(c, r+1), left (c, r+1)->(c, r)
    starts, directions, owners = [], [], []
    for direction, (neighbour, corner) in enumerate((
        (padded[:-2, 1:-1], (0, 0)), (padded[1:-1, 2:], (1, 0)), (padded[2:, 1:-1], (1, 1)), (padded[1:-1, :-2], (0, 1)),
    )):
        rows, cols = np.nonzero(inner & ~neighbour)
        starts.append(np.stack([cols + corner[0], rows + corner[1]], axis=1))
        directions.append(np.full(len(rows), direction))
        owners.append(np.stack([rows, cols], axis=1))
    start = np.concatenate(starts).astype(np.int64)
    direction = np.concatenate(directions)
    owner = np.concatenate(owners)
    if len(start) == 0:
        return [], [], []
    end = start + _STEPS[direction]
    stride = width + 1
    key = (start[:, 1] * stride + start[:, 0]) * 4 + direction
    order = np.argsort(key)
    sorted_keys = key[order]
    end_vertex = end[:, 1] * stride + end[:, 0]
    following = np.full(len(start), -1)
    # at a vertex shared by two diagonal pixels: right turn first (it keeps to the same pixel), then straight, then left
    for turn in (1, 0, 3):
        wanted = end_vertex * 4 + (direction + turn) % 4
        at = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
        found = (sorted_keys[at] == wanted) & (following < 0)
        following[found] = order[at[found]]
    assert (following >= 0).all(), "every boundary edge continues"
    cycle, position = _cycles(following)
    order = np.lexsort((position, cycle))  # edges ring by ring, in walking order
    cycle, direction, start, owner = cycle[order], direction[order], start[order], owner[order]
    first = np.flatnonzero(np.r_[True, cycle[1:] != cycle[:-1]])
    last = np.r_[first[1:], len(cycle)] - 1
    previous = np.arange(len(cycle)) - 1
    previous[first] = last  # the edge before a ring's first is its last
    corner = direction != direction[previous]  # keep the corners only
    # signed area of each ring, from its edges (shoelace), y down: positive for an outer ring
    end = start + _STEPS[direction]
    cross = start[:, 0] * end[:, 1] - end[:, 0] * start[:, 1]
    areas = np.bincount(cycle, weights=cross, minlength=cycle[-1] + 1)[cycle[first]] / 2
    kept = np.flatnonzero(corner)
    bounds = np.searchsorted(kept, first)  # where each ring's corners start among the kept edges
    rings = np.split(start[kept], bounds[1:])
    firsts = kept[bounds]
    pixels = [(int(r), int(c)) for r, c in owner[firsts].tolist()]
    return rings, pixels, areas.tolist()


def _cycles(following: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a permutation ``following`` (edge -> next edge), each edge's cycle and its place in it.

    The cycles are the weakly connected components of the graph; places are counted from the cycle's
    lowest edge by pointer jumping (log2 of the longest ring rounds of whole-array steps, no loop per edge).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(following)
    every = np.arange(n)
    _, cycle = connected_components(csr_matrix((np.ones(n, dtype=np.int8), (every, following)), shape=(n, n)),
                                    directed=True, connection="weak")
    lowest = np.full(cycle.max() + 1, n)
    np.minimum.at(lowest, cycle, every)
    successor = following.copy()
    ends = following == lowest[cycle]  # the last edge of each cycle, walking from its lowest
    successor[ends] = every[ends]
    steps = (~ends).astype(np.int64)  # steps to the last edge
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2))))) + 1):
        steps = steps + steps[successor]
        successor = successor[successor]
    length = np.bincount(cycle)
    return cycle, length[cycle] - 1 - steps


def midpoint_ring(corners: np.ndarray) -> np.ndarray:
    """The ring through the midpoints of the unit pixel edges of a traced ring (its ``corners``, int ``[N, 2]``),
    keeping only the points where its direction changes. float64 ``[M, 2]``, coordinates multiples of 0.5."""
    outgoing = np.sign(_next(corners) - corners)  # unit steps (traced rings are axis-aligned)
    incoming = _previous(outgoing)
    doubled = np.stack([2 * corners - incoming, 2 * corners + outgoing], axis=1).reshape(-1, 2)  # in half pixels
    doubled = doubled[np.any(doubled != _previous(doubled), axis=1)]  # a run of one edge: its midpoint once
    before = doubled - _previous(doubled)
    after = _previous(before, -1)
    turning = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return doubled[turning] / 2.0


def _next(ring: np.ndarray) -> np.ndarray:
    """Each vertex's successor around the ring (``np.roll(ring, -1, 0)``, without its overhead on small rings)."""
    return np.concatenate([ring[1:], ring[:1]])


def _previous(ring: np.ndarray, shift: int = 1) -> np.ndarray:
    """Each vertex's predecessor around the ring (``shift=-1``: its successor)."""
    return np.concatenate([ring[-1:], ring[:-1]]) if shift == 1 else _next(ring)


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed ring: a subset of its vertices, every dropped one within ``tolerance``
    pixels of the result. A ring that would keep fewer than 3 vertices, or lose more than half its
    area, is returned unchanged."""
    if tolerance <= 0 or len(ring) <= 4:
        return ring
    points = ring.astype(np.float64)
    far = int(np.argmax(((points - points[0]) ** 2).sum(1)))
    keep = np.zeros(len(ring) + 1, dtype=bool)
    closed = np.concatenate([points, points[:1]])
    keep[[0, far, len(ring)]] = True
    stack = [(0, far), (far, len(ring))]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        a, b = closed[lo], closed[hi]
        segment = closed[lo + 1 : hi]
        d = b - a
        length = float(np.hypot(*d))
        if length == 0:
            distance = np.hypot(*(segment - a).T)
        else:
            distance = np.abs(d[0] * (segment[:, 1] - a[1]) - d[1] * (segment[:, 0] - a[0])) / length
        worst = int(np.argmax(distance))
        if distance[worst] > tolerance:
            middle = lo + 1 + worst
            keep[middle] = True
            stack += [(lo, middle), (middle, hi)]
    simplified = ring[keep[:-1]]
    if len(simplified) < 3 or abs(ring_area(simplified)) < abs(ring_area(ring)) / 2:
        return ring
    return simplified


def outlines(
    label_map: np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: int = DEFAULT_MIN_AREA,
    skip: tuple[int, ...] = (0, 255),
) -> list[Outline]:
    """Every 4-connected region of every class in ``label_map`` (int ``[H, W]``) as an :class:`Outline`.

    Args:
        tolerance: simplification in pixels (0: the exact pixel outline).
        min_area: regions and holes of fewer pixels are left out (a hole left out is filled by its region).
        skip: labels that get no outline (the background and the ignore label).
    Returns:
        Outlines by class, then by the position of the region's first pixel in row-major order.
    """
    label_map = np.asarray(label_map)
    found: list[Outline] = []
    for label in np.unique(label_map):
        if int(label) in skip:
            continue
        mask = label_map == label
        regions, count = ndimage.label(mask)  # 4-connected (the default cross)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)
        rings, pixels, areas = trace_rings(mask)
        outer: dict[int, np.ndarray] = {}
        holes: dict[int, list[np.ndarray]] = {}
        for ring, (row, col), area in zip(rings, pixels, areas):  # area: of the pixel-edge ring, the pixels it holds
            region = int(regions[row, col])
            if sizes[region] < min_area:
                continue
            if area > 0:
                outer[region] = midpoint_ring(ring)
            elif -area >= max(min_area, 1):
                holes.setdefault(region, []).append(midpoint_ring(ring))
        for region in sorted(outer):  # ndimage.label numbers regions in the row-major order of their first pixels
            found.append(Outline(
                int(label),
                simplify_ring(outer[region], tolerance),
                tuple(simplify_ring(h, tolerance) for h in holes.get(region, [])),
                int(sizes[region]),
            ))
    return found


@dataclass(frozen=True)
class Piece:
    """A ring painted with one label, for formats whose polygons have no holes: a region's outer ring,
    or a hole of it painted with the background (label 0) before what lies inside the hole is painted."""

    label: int
    ring: np.ndarray
    hole: bool

    @property
    def area(self) -> float:
        return abs(ring_area(self.ring))


def paint_pieces(found: list[Outline]) -> list[Piece]:
    """Outer rings and hole rings in the order that, painted one over the other, gives back the label map.

    Larger rings first, a hole before a region of the same area (the region it holds): the order of
    fcnseg's importers with ``--overlap area`` (larger first) and with ``--overlap order`` (annotation
    order) alike, and the z-order of the tools.
    """
    pieces = [Piece(o.label, o.outer, False) for o in found]
    pieces += [Piece(0, h[::-1], True) for o in found for h in o.holes]  # a hole, walked as an outer ring
    return sorted(pieces, key=lambda p: (-p.area, not p.hole))

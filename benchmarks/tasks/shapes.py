"""python -m benchmarks.tasks --task shapes --output_dir data/shapes [--seed 0] [--train_per_class 400]
    [--validation_per_class 50] [--test_per_class 100] [--num_points 1024] [--noise 0.02] [--max_occlusion 0.3]
    [--min_scale 0.7] [--max_scale 1.3]

Point clouds of procedural 3-D shapes, twelve classes (`SHAPES`): sphere, hemisphere, capsule, cylinder, cone,
bicone, torus (the surfaces of revolution of a profile), cube, square pyramid, tetrahedron, octahedron and triangular
prism (convex polyhedra). Each class is one triangle mesh; an instance is drawn from it in these steps, whose
amounts are the task's difficulty:

1. points sampled uniformly on the mesh's surface (each triangle in proportion to its area);
2. a non-uniform scale: each of the shape's own axes stretched by a factor drawn from [`min_scale`, `max_scale`]
   (default 0.7 … 1.3, so a sphere becomes an ellipsoid and a cube a box of sides up to 1.86 : 1);
3. a rotation drawn uniformly from all 3-D rotations;
4. centred, and scaled so that its farthest point lies on the unit sphere;
5. surface noise: a normal offset of standard deviation `noise` (default 0.02, of that unit radius) on each
   coordinate;
6. partial occlusion: the points beyond a plane of random direction dropped, a fraction drawn from [0,
   `max_occlusion`] (default 0 … 30 %); enough points are sampled in step 1 that `num_points` remain;
7. centred again (mean zero) and scaled again so that the farthest point is at distance 1.

Columns: `points` (`num_points` rows of [x, y, z], float32) and `label` (ClassLabel of `SHAPES`). Every split has
the same number of instances of each class, in random order; each instance is drawn from its own stream of the seed
(the seed, the split and the instance's index), so a split's instances do not depend on the sizes of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import Array2D, ClassLabel, DatasetDict, Features
from scipy.spatial import ConvexHull

from . import labelled_split


SECTORS = 64  # around the axis of a surface of revolution
ARC_STEPS = 16  # along a curved part of a profile
SPLITS = ("train", "validation", "test")


def arc(center_height: float, start: float, stop: float, radius: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Profile points (distance from the axis, height) of a circular arc from angle `start` to `stop` (radians from
    the +z axis), centred `offset` from the axis at `center_height`."""
    angles = np.linspace(start, stop, ARC_STEPS + 1)
    return np.stack([offset + radius * np.sin(angles), center_height + radius * np.cos(angles)], axis=1)


# Each surface of revolution as its profile: (distance from the axis, height) from one end to the other.
PROFILES = {
    "sphere": arc(0.0, 0.0, np.pi),
    "hemisphere": np.concatenate([arc(0.0, 0.0, np.pi / 2), [[0.0, 0.0]]]),
    "capsule": np.concatenate([arc(1.0, 0.0, np.pi / 2), arc(-1.0, np.pi / 2, np.pi)]),
    "cylinder": np.array([[0.0, 1.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]]),
    "cone": np.array([[0.0, 1.0], [1.0, -1.0], [0.0, -1.0]]),
    "bicone": np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]),
    "torus": arc(0.0, 0.0, 2 * np.pi, radius=0.35, offset=1.0),
}
_TRIANGLE = [(np.cos(a), np.sin(a)) for a in 2 * np.pi * np.arange(3) / 3]
# Each convex polyhedron as its corners.
CORNERS = {
    "cube": [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
    "pyramid": [(x, y, -1) for x in (-1, 1) for y in (-1, 1)] + [(0, 0, 1)],
    "tetrahedron": [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)],
    "octahedron": [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)],
    "prism": [(x, y, z) for x, y in _TRIANGLE for z in (-1, 1)],
}
SHAPES = list(PROFILES) + list(CORNERS)


@dataclass
class ShapesArguments:
    """How many point clouds, of how many points, and how hard (the fields of `build`'s settings)."""

    train_per_class: int = field(default=400, metadata={"help": "Shapes: training clouds of each class."})
    validation_per_class: int = field(default=50, metadata={"help": "Shapes: validation clouds of each class."})
    test_per_class: int = field(default=100, metadata={"help": "Shapes: test clouds of each class."})
    num_points: int = field(default=1024, metadata={"help": "Shapes: points of each cloud."})
    noise: float = field(default=0.02, metadata={"help": "Shapes: std of the noise on each coordinate (unit radius)."})
    max_occlusion: float = field(
        default=0.3, metadata={"help": "Shapes: the largest fraction of a cloud dropped beyond a random plane."}
    )
    min_scale: float = field(default=0.7, metadata={"help": "Shapes: the smallest stretch of a shape's axis."})
    max_scale: float = field(default=1.3, metadata={"help": "Shapes: the largest stretch of a shape's axis."})

    def __post_init__(self):
        for name in ("train_per_class", "validation_per_class", "test_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.num_points < 4:
            raise ValueError(f"--num_points must be at least 4, got {self.num_points}")
        if self.noise < 0:
            raise ValueError(f"--noise must be 0 (none) or positive, got {self.noise}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"--max_occlusion must lie in [0, 1), got {self.max_occlusion}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"the stretches must satisfy 0 < --min_scale <= --max_scale, got {self.min_scale} and {self.max_scale}"
            )


def revolution_mesh(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The triangles of `profile` turned about the z axis: vertices (P·S, 3) and faces (F, 3) of vertex indices."""
    angles = 2 * np.pi * np.arange(SECTORS) / SECTORS
    radius, height = profile[:, :1], profile[:, 1:]
    vertices = np.stack(
        [radius * np.cos(angles), radius * np.sin(angles), np.broadcast_to(height, (len(profile), SECTORS))], axis=-1
    ).reshape(-1, 3)
    ring, sector = np.meshgrid(np.arange(len(profile) - 1), np.arange(SECTORS), indexing="ij")
    here, below = ring * SECTORS + sector, (ring + 1) * SECTORS + sector
    here_next, below_next = ring * SECTORS + (sector + 1) % SECTORS, (ring + 1) * SECTORS + (sector + 1) % SECTORS
    faces = np.concatenate([np.stack([here, below, below_next], -1), np.stack([here, below_next, here_next], -1)])
    return vertices, faces.reshape(-1, 3)


def shape_mesh(name: str) -> np.ndarray:
    """The triangles of shape `name`, as corner coordinates (F, 3, 3)."""
    if name in PROFILES:
        vertices, faces = revolution_mesh(PROFILES[name])
    else:
        vertices = np.asarray(CORNERS[name], dtype=float)
        faces = ConvexHull(vertices).simplices
    return vertices[faces]


def sample_surface(triangles: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points drawn uniformly on the surface of `triangles` (F, 3, 3): (count, 3)."""
    first, second, third = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    areas = np.linalg.norm(np.cross(second - first, third - first), axis=-1)
    chosen = np.searchsorted(np.cumsum(areas) / areas.sum(), rng.random(count), side="right")
    chosen = np.minimum(chosen, len(triangles) - 1)  # a draw at the top of the float range
    u, v = rng.random((2, count, 1))
    outside = (u + v) > 1  # folded back into the triangle, which keeps the density uniform
    u, v = np.where(outside, 1 - u, u), np.where(outside, 1 - v, v)
    return first[chosen] + u * (second - first)[chosen] + v * (third - first)[chosen]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar) from all 3-D rotations: the Q of a Gaussian matrix's QR."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # the signs that make Q uniform
    if np.linalg.det(q) < 0:  # a reflection: flip one axis to make it a rotation
        q[:, 0] = -q[:, 0]
    return q


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """`points` centred on their mean and scaled so that the farthest lies at distance 1."""
    centred = points - points.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1).max()


def point_cloud(triangles: np.ndarray, settings: ShapesArguments, rng: np.random.Generator) -> np.ndarray:
    """One instance of a shape, drawn as the module's docstring says: (num_points, 3) float32."""
    occluded = rng.uniform(0.0, settings.max_occlusion)
    count = int(np.ceil(settings.num_points / (1.0 - occluded)))
    points = sample_surface(triangles, count, rng)
    points = points * rng.uniform(settings.min_scale, settings.max_scale, 3)  # along the shape's own axes
    points = unit_sphere(points @ random_rotation(rng).T)
    points = points + rng.normal(0.0, settings.noise, points.shape)
    direction = rng.normal(size=3)
    nearest = np.argsort(points @ direction)[: settings.num_points]  # those on this side of the plane
    kept = points[np.sort(nearest)]  # in the order drawn, which says nothing of the plane
    return unit_sphere(kept).astype(np.float32)


def build(seed: int = 0, **settings) -> DatasetDict:
    """Point clouds of the shapes of `SHAPES` drawn with `seed`: train / validation / test splits of `points` and
    `label`, balanced over the classes. `settings` are the fields of `ShapesArguments` (sizes and difficulty)."""
    settings = ShapesArguments(**settings)
    meshes = [shape_mesh(name) for name in SHAPES]
    features = Features({"points": Array2D((None, 3), "float32"), "label": ClassLabel(names=SHAPES)})
    per_class = (settings.train_per_class, settings.validation_per_class, settings.test_per_class)
    description = (
        f"procedural shapes, {settings.num_points} points, axis stretches {settings.min_scale:g} … "
        f"{settings.max_scale:g}, noise {settings.noise:g}, occlusion ≤ {settings.max_occlusion:g}, seed {seed}"
    )
    splits = {}
    for index, (name, count) in enumerate(zip(SPLITS, per_class)):
        order = np.random.default_rng([seed, index]).permutation(count * len(SHAPES))
        labels = [int(label) for label in order % len(SHAPES)]
        clouds = [
            point_cloud(meshes[label], settings, np.random.default_rng([seed, index, example]))
            for example, label in enumerate(labels)
        ]
        splits[name] = labelled_split({"points": clouds, "label": labels}, features, f"{description}: {name} split")
    return DatasetDict(splits)


__all__ = ["SHAPES", "ShapesArguments", "build", "point_cloud", "random_rotation", "sample_surface", "shape_mesh"]
